"""The lake's keyring record: written once, compared by every ingest and rotation."""

from __future__ import annotations

import json

import pytest

from dicomlake.config import LockConfig
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import KeyringMismatchError, LakeError
from dicomlake.lake.keyring_binding import bind_keyring
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.storage.local import LocalFileSystem


@pytest.fixture
def bind(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    with holding(fs, layout.root, None, "test", LockConfig()) as lock:
        yield lambda keyring, **kw: bind_keyring(fs, layout, keyring, lock, **kw)


def test_public_half_and_rotation(tmp_path, bind):
    full = Keyring.generate("x25519")
    bind(full.public_only())  # the first run records it
    record = json.loads((tmp_path / "keyring-binding.json").read_text())
    assert record["kek_ids"] == full.kek_ids and record["active_kek_id"] == full.active_kek_id
    bind(full)  # the same keyring, private half
    rotated = full.rotate()
    bind(rotated, rotating=True)  # holds the lake's active KEK
    with pytest.raises(KeyringMismatchError, match="unknown KEK: this keyring's active KEK .* an"):
        bind(rotated)  # not recorded yet: the rotation of the lake did not happen
    with pytest.raises(KeyringMismatchError, match="unknown KEK: .*'s active KEK .* is not in"):
        bind(rotated.without(full.active_kek_id), rotating=True)
    with pytest.raises(KeyringMismatchError, match="fingerprint mismatch"):
        bind(Keyring.generate("x25519"), rotating=True)


def test_a_damaged_record_is_named(tmp_path, bind):
    (tmp_path / "keyring-binding.json").write_text('{"fingerprint": "x"}')
    with pytest.raises(LakeError, match="keyring-binding.json is not a keyring record"):
        bind(Keyring.generate("symmetric"))


def test_a_rotation_stopped_while_it_replaced_the_record_is_finished_not_forgotten(tmp_path, bind):
    keyring = Keyring.generate("symmetric")
    bind(keyring)
    rotated = keyring.rotate()
    # Stopped with the new record in place and the old one deleted: the lake is not left
    # unbound, for any keyring to take over
    next_record = {
        "fingerprint": rotated.fingerprint,
        "active_kek_id": rotated.active_kek_id,
        "kek_ids": rotated.kek_ids,
    }
    (tmp_path / "keyring-binding.next.json").write_text(json.dumps(next_record))
    (tmp_path / "keyring-binding.json").unlink()
    with pytest.raises(KeyringMismatchError, match="fingerprint mismatch"):
        bind(Keyring.generate("symmetric"))
    assert json.loads((tmp_path / "keyring-binding.json").read_text()) == next_record
    assert not (tmp_path / "keyring-binding.next.json").exists()
    bind(rotated)  # the rotated keyring is the lake's
    with pytest.raises(KeyringMismatchError, match="unknown KEK"):
        bind(keyring)
