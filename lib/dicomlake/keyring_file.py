"""Reading and writing keyring files (the crypto package itself never touches a filesystem)."""

from __future__ import annotations

import logging
import os

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import KeyringError, StorageError
from dicomlake.lake.layout import lake_around
from dicomlake.storage import FileSystem, canonical_uri, filesystem_for, os_path

log = logging.getLogger(__name__)


def load_keyring(uri: str, config: Config) -> Keyring:
    """The keyring at ``uri``; a missing file says how to make one."""
    fs = filesystem_for(uri, config.hdfs)
    if not fs.exists(uri):
        raise KeyringError(
            f"no keyring at {uri!r}: create one with `dicomlake keys init "
            f"--keyring {uri}` or point keys.keyring / --keyring at yours"
        )
    local = os_path(uri)
    if local is not None and not os.path.isfile(local):  # a folder, a device, a FIFO
        raise KeyringError(f"keyring {uri!r} is not a regular file: point --keyring at one")
    _check_outside_lakes(fs, uri)
    try:
        _check_private(fs, uri)
        data = fs.read(uri)
    except StorageError as exc:
        raise KeyringError(f"cannot read keyring {uri!r}: {exc}") from exc
    try:
        return Keyring.from_bytes(data)
    except KeyringError as exc:  # its own messages say what is wrong, not which file
        raise KeyringError(f"keyring {uri!r}: {str(exc).removeprefix('keyring: ')}") from exc


def _check_private(fs: FileSystem, uri: str) -> None:
    """Refuse a keyring every user may read or write, as ssh refuses such a private key: any
    keyring holds the pseudonym secret (with it, pseudonyms of guessed identifiers can be
    computed), a full one the keys of every pack. Group access is the operator's choice (an
    ingest service may share the public half): logged."""
    mode = fs.mode(uri)
    if mode & 0o007:
        chmod = "chmod 600" if fs.scheme == "file" else "hdfs dfs -chmod 600"
        raise KeyringError(
            f"keyring {uri!r} is open to every user (mode {mode:04o}); it holds the pseudonym "
            f"secret and keys: {chmod} {uri.removeprefix('file://')}"
        )
    if mode & 0o070:
        log.warning("keyring %s is open to its group (mode %04o)", uri, mode)


def _check_outside_lakes(fs: FileSystem, uri: str) -> None:
    """Refuse a keyring kept in a lake: every snapshot of the lake would copy it, and a backup
    must never hold the keys to itself."""
    lake = lake_around(fs, uri)
    if lake is not None:
        raise in_lake(uri, lake)


def in_lake(uri: str, lake: str) -> KeyringError:
    """The error for keyring ``uri`` kept in the lake at ``lake``."""
    return KeyringError(
        f"keyring {uri!r} is in the lake at {lake}, whose snapshots would copy it: keep "
        "keyrings outside every lake"
    )


def save_keyring(uri: str, keyring: Keyring, config: Config) -> None:
    """Write the keyring, readable by its owner only, whole or not at all."""
    fs = filesystem_for(uri, config.hdfs)
    _check_outside_lakes(fs, uri)
    fs.write_private(uri, keyring.to_bytes())


def check_targets(keyring_uri: str, public_uri: str | None, config: Config) -> None:
    """Before anything is written: refuse a keyring path or ``--public-out`` that cannot take
    a file (empty, or a directory), and a ``--public-out`` that is the keyring's own entry,
    whose public half would replace the private keys (a rotation's new key with them), or
    that holds anything but a public half (`_check_replaceable`)."""
    targets = {"--keyring (keys.keyring)": keyring_uri, "--public-out": public_uri}
    for flag, uri in targets.items():
        if uri is None:
            continue
        if not uri.strip():
            raise KeyringError(f"{flag} is empty: name a file")
        path = os_path(uri)
        if path is not None and os.path.isdir(path) and not os.path.islink(path):
            raise KeyringError(f"{flag} {uri!r} is a directory: name a file")
    if public_uri is not None and _entry(keyring_uri) == _entry(public_uri):
        raise KeyringError(
            f"--public-out {public_uri!r} is the keyring {keyring_uri!r} itself: its public "
            "half would replace the private keys; write it to another file"
        )
    if public_uri is not None:
        _check_replaceable(public_uri, config)


def _check_replaceable(uri: str, config: Config) -> None:
    """Refuse a ``--public-out`` that exists and is not a public half: a full keyring there
    (another one's, or a copy) would lose its private keys, another file its content. A public
    half is replaced, as after every rotation; so is a link, its target untouched."""
    local = os_path(uri)
    if local is not None and os.path.islink(local):
        return
    fs = filesystem_for(uri, config.hdfs)
    if not fs.exists(uri):
        return
    try:
        if local is not None and not os.path.isfile(local):  # a device, a FIFO
            raise KeyringError("not a regular file")
        held = Keyring.from_bytes(fs.read(uri))
    except (KeyringError, StorageError) as exc:
        raise KeyringError(
            f"--public-out {uri!r} exists and is not a keyring ({exc}): it would be replaced; "
            "remove it or name another file"
        ) from None
    if held.can_unwrap:
        raise KeyringError(
            f"--public-out {uri!r} is a full keyring: its private keys would be replaced by a "
            "public half, and lost; name another file (or the keyring's existing public half)"
        )


def _entry(uri: str) -> str:
    """The directory entry a write to ``uri`` replaces: a local path's folder by its real
    path (a linked folder is the same folder), its own name as it is (a link at the name is
    replaced, not written through)."""
    local = os_path(uri)
    if local is None:
        return canonical_uri(uri)
    folder, name = os.path.split(local)
    return os.path.join(os.path.realpath(folder), name)
