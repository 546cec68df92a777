"""Reading and writing keyring files (the crypto package itself never touches a filesystem)."""

from __future__ import annotations

import os

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import KeyringError, StorageError
from dicomlake.storage import filesystem_for


def load_keyring(uri: str, config: Config) -> Keyring:
    """The keyring at ``uri``; a missing file says how to make one."""
    fs = filesystem_for(uri, config.hdfs)
    if not fs.exists(uri):
        raise KeyringError(
            f"no keyring at {uri!r}: create one with `dicomlake keys init "
            f"--keyring {uri}` or point keys.keyring / --keyring at yours"
        )
    try:
        return Keyring.from_bytes(fs.read(uri))
    except StorageError as exc:
        raise KeyringError(f"cannot read keyring {uri!r}: {exc}") from exc


def save_keyring(uri: str, keyring: Keyring, config: Config) -> None:
    """Write the keyring; local files are made readable by their owner only."""
    fs = filesystem_for(uri, config.hdfs)
    if fs.scheme == "file":
        path = uri.removeprefix("file://")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(keyring.to_bytes())
        os.replace(tmp, path)  # a keyring is replaced whole or not at all
    else:
        fs.write_bytes(uri, keyring.to_bytes())
