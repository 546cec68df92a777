"""The lake's keyring record: written once, compared by every ingest and rotation."""

from __future__ import annotations

import base64
import hashlib
import json
import re

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
    # Not recorded yet: the rotation of the lake did not happen (stopped, or another lake's)
    says = f"wrapped under KEK {full.active_kek_id}, this keyring's active KEK is "
    says += f"{rotated.active_kek_id}, an unknown KEK of the lake: run `dicomlake keys rewrap "
    with pytest.raises(KeyringMismatchError, match=re.escape(says + f"--lake {tmp_path}`")):
        bind(rotated)
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


def _replaced_key(keyring: Keyring, field: str) -> Keyring:
    """``keyring`` as its file would be after another key was written under its KEK's id (the
    secret, id and dates kept)."""
    doc = json.loads(keyring.to_bytes())
    other = json.loads(Keyring.generate(keyring.mode).to_bytes())
    doc["keks"][0][field] = other["keks"][0][field]
    return Keyring.from_bytes(json.dumps(doc).encode())


def test_the_record_pins_each_keks_key(tmp_path, bind):
    full = Keyring.generate("x25519")
    bind(full.public_only())
    record = json.loads((tmp_path / "keyring-binding.json").read_text())
    (kek,) = json.loads(full.to_bytes())["keks"]
    expected = hashlib.sha256(
        b"dicomlake-kek-digest-v1\0" + kek["id"].encode() + b"\0" + base64.b64decode(kek["public"])
    ).hexdigest()
    assert record["kek_digests"] == {kek["id"]: expected}


@pytest.mark.parametrize(("mode", "field"), [("x25519", "public"), ("symmetric", "key")])
def test_a_keyring_whose_key_was_replaced_under_its_id_is_refused(tmp_path, bind, mode, field):
    keyring = Keyring.generate(mode)
    half = keyring.public_only() if mode == "x25519" else keyring
    bind(half)
    swapped = _replaced_key(half, field)
    assert swapped.fingerprint == keyring.fingerprint  # the secret alone would let it pass
    before = (tmp_path / "keyring-binding.json").read_bytes()
    for rotating in (False, True):
        with pytest.raises(KeyringMismatchError, match=f"the key of {keyring.active_kek_id}"):
            bind(swapped, rotating=rotating)
    assert (tmp_path / "keyring-binding.json").read_bytes() == before
    bind(keyring)  # the lake's own keyring still passes


def test_a_record_without_digests_is_still_read(tmp_path, bind):
    keyring = Keyring.generate("x25519")
    bind(keyring)
    path = tmp_path / "keyring-binding.json"
    record = json.loads(path.read_text())
    del record["kek_digests"]  # as written before the digests were kept
    path.write_text(json.dumps(record))
    bind(keyring.public_only())
    bind(keyring.rotate(), rotating=True)
    assert json.loads(path.read_text()) == record  # a check writes nothing
