"""Keyring files: written at mode 0600 under a fresh name, never through an existing tmp file."""

from __future__ import annotations

import os
import stat

from dicomlake.crypto.keyring import Keyring
from dicomlake.keyring_file import load_keyring, save_keyring


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_keyring_is_0600(tmp_path, config):
    path = tmp_path / "k" / "keyring.json"
    keyring = Keyring.generate("x25519")
    save_keyring(str(path), keyring, config)
    assert _mode(path) == 0o600
    assert load_keyring(str(path), config).to_bytes() == keyring.to_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["keyring.json"]


def test_a_preexisting_world_readable_tmp_is_neither_used_nor_inherited(tmp_path, config):
    path = tmp_path / "keyring.json"
    tmp = tmp_path / "keyring.json.tmp"
    tmp.write_bytes(b"planted")
    os.chmod(tmp, 0o644)
    save_keyring(str(path), Keyring.generate("symmetric"), config)
    assert _mode(path) == 0o600
    assert tmp.read_bytes() == b"planted" and _mode(tmp) == 0o644


def test_a_symlinked_tmp_is_not_followed(tmp_path, config):
    path = tmp_path / "keyring.json"
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_bytes(b"not a keyring")
    os.chmod(elsewhere, 0o644)
    (tmp_path / "keyring.json.tmp").symlink_to(elsewhere)
    keyring = Keyring.generate("symmetric")
    save_keyring(str(path), keyring, config)
    assert elsewhere.read_bytes() == b"not a keyring" and _mode(elsewhere) == 0o644
    assert not path.is_symlink() and _mode(path) == 0o600
    assert load_keyring(str(path), config).to_bytes() == keyring.to_bytes()


def test_replacing_a_symlinked_keyring_replaces_the_link_not_its_target(tmp_path, config):
    target = tmp_path / "target.json"
    target.write_bytes(b"keep me")
    path = tmp_path / "keyring.json"
    path.symlink_to(target)
    save_keyring(str(path), Keyring.generate("symmetric"), config)
    assert target.read_bytes() == b"keep me"
    assert not path.is_symlink() and _mode(path) == 0o600
