"""Reading and writing keyring files (the crypto package itself never touches a filesystem)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import KeyringError, StorageError
from dicomlake.storage import filesystem_for

log = logging.getLogger(__name__)


def load_keyring(uri: str, config: Config) -> Keyring:
    """The keyring at ``uri``; a missing file says how to make one."""
    fs = filesystem_for(uri, config.hdfs)
    if not fs.exists(uri):
        raise KeyringError(
            f"no keyring at {uri!r}: create one with `dicomlake keys init "
            f"--keyring {uri}` or point keys.keyring / --keyring at yours"
        )
    if fs.scheme == "file":
        _check_private(uri.removeprefix("file://"))
    try:
        data = fs.read(uri)
    except StorageError as exc:
        raise KeyringError(f"cannot read keyring {uri!r}: {exc}") from exc
    try:
        return Keyring.from_bytes(data)
    except KeyringError as exc:  # its own messages say what is wrong, not which file
        raise KeyringError(f"keyring {uri!r}: {str(exc).removeprefix('keyring: ')}") from exc


def _check_private(path: str) -> None:
    """Refuse a local keyring every user may read or write, as ssh refuses such a private key:
    any keyring holds the pseudonym secret (with it, pseudonyms of guessed identifiers can be
    computed), a full one the keys of every pack. Group access is the operator's choice (an
    ingest service may share the public half): logged."""
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o007:
        raise KeyringError(
            f"keyring {path!r} is open to every user (mode {mode:04o}); it holds the pseudonym "
            f"secret and keys: chmod 600 {path}"
        )
    if mode & 0o070:
        log.warning("keyring %s is open to its group (mode %04o)", path, mode)


def save_keyring(uri: str, keyring: Keyring, config: Config) -> None:
    """Write the keyring; a local file is made readable by its owner only, whole or not at all."""
    fs = filesystem_for(uri, config.hdfs)
    if fs.scheme == "file":
        _write_private(uri.removeprefix("file://"), keyring.to_bytes())
    else:
        fs.write_bytes(uri, keyring.to_bytes())


def _write_private(path: str, data: bytes) -> None:
    """A new file at a fresh random name (never one that exists, nor a symlink: O_EXCL and
    O_NOFOLLOW), mode 0600 from its creation, synced, then renamed over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
