"""The pixel store's keys and integrity on a real lake: tampering, key modes, rotation."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from ingest_helpers import table
from pydicom.data import get_testdata_file

from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import (
    KeyringMismatchError,
    MissingKeyError,
    PrivateKeyRequiredError,
    TamperedChunkError,
    TruncatedPackError,
)
from dicomlake.ingest.job import run_ingest
from dicomlake.lake.export import export_instances
from dicomlake.lake.keyring_binding import rewrap_lake
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.lake.pixelstore import PixelStore
from dicomlake.storage.local import LocalFileSystem

pytestmark = pytest.mark.spark

FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb.dcm", "emri_small.dcm"]


def _landing(root: Path) -> Path:
    landing = root / "landing"
    landing.mkdir()
    for name in FILES:
        shutil.copy(get_testdata_file(name), landing / name)
    return landing


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_all(lake: Path, keyring: Keyring, config, out: Path) -> dict[str, str]:
    for row in table(lake, "instances").to_pylist():
        export_instances(str(lake), keyring, config, out, sop=row["SOPInstanceUID"])
    return {p.name: _sha(p) for p in out.iterdir()}


@pytest.fixture
def lake(tmp_path, sc, config, keyring):
    lake = tmp_path / "lake"
    run_ingest(sc, str(_landing(tmp_path)), str(lake), config, keyring)
    return lake


def _frame_row(lake: Path, index: int = 0) -> dict:
    rows = [r for r in table(lake, "frames").to_pylist() if r["chunk_kind"] == "frame"]
    return sorted(rows, key=lambda r: (r["pack_path"], r["offset"]))[index]


def test_flipped_byte_names_pack_and_chunk(lake, config, keyring):
    row = _frame_row(lake)
    pack = lake / row["pack_path"]
    data = bytearray(pack.read_bytes())
    data[row["offset"] + row["length"] // 2] ^= 0x01
    pack.write_bytes(bytes(data))
    store = PixelStore(str(lake), keyring, config)
    with pytest.raises(TamperedChunkError) as err:
        store.chunk(row)
    assert Path(row["pack_path"]).stem in str(err.value)
    assert row["instance_id"] in str(err.value)


def test_swapped_chunks_fail_to_open(lake, config, keyring):
    a, b = _frame_row(lake, 0), _frame_row(lake, 1)
    assert a["pack_path"] == b["pack_path"]
    # Give chunk a's place in the table chunk b's bytes: the associated data no longer matches.
    moved = dict(a, offset=b["offset"], length=b["length"])
    with pytest.raises(TamperedChunkError):
        PixelStore(str(lake), keyring, config).chunk(moved)


def test_truncated_pack_is_detected(lake, config, keyring):
    row = max(table(lake, "frames").to_pylist(), key=lambda r: r["offset"] + r["length"])
    pack = lake / row["pack_path"]
    pack.write_bytes(pack.read_bytes()[: row["offset"] + row["length"] // 2])
    with pytest.raises(TruncatedPackError):
        PixelStore(str(lake), keyring, config).chunk(row)


def test_another_keyring_is_a_clear_error(lake, config, tmp_path):
    # Another secret: named by the lake's keyring record before anything is read
    with pytest.raises(KeyringMismatchError, match="fingerprint mismatch"):
        _export_all(lake, Keyring.generate(), config, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # not even a partly written file
    # Without the record, the packs' wrapped keys tell it
    (lake / "keyring-binding.json").rename(lake / "moved.json")
    with pytest.raises(MissingKeyError):
        _export_all(lake, Keyring.generate(), config, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # made, and removed as nothing was written


def test_a_lake_that_lost_its_keyring_record_is_not_bound_by_another_keyring(
    lake, sc, config, keyring, tmp_path
):
    (lake / "keyring-binding.json").unlink()  # lost, or left out of a copy of the lake
    more = tmp_path / "more"
    more.mkdir()
    shutil.copy(get_testdata_file("rtplan.dcm"), more / "rtplan.dcm")
    other = Keyring.generate()
    with pytest.raises(KeyringMismatchError, match=f"wrapped under KEK {keyring.active_kek_id}"):
        run_ingest(sc, str(more), str(lake), config, other)
    assert not (lake / "keyring-binding.json").exists()
    run_ingest(sc, str(more), str(lake), config, keyring)  # its own keyring binds it again
    assert json.loads((lake / "keyring-binding.json").read_text())["fingerprint"] == (
        keyring.fingerprint
    )


def test_public_key_mode_ingests_without_being_able_to_read(tmp_path, sc, config):
    private = Keyring.generate("x25519")
    public = private.public_only()
    lake = tmp_path / "lake"
    summary = run_ingest(sc, str(_landing(tmp_path)), str(lake), config, public)
    assert summary.ingested == len(FILES)
    with pytest.raises(PrivateKeyRequiredError):
        _export_all(lake, public, config, tmp_path / "nope")
    exported = _export_all(lake, private, config, tmp_path / "out")
    originals = {_sha(Path(get_testdata_file(n))) for n in FILES}
    assert set(exported.values()) == originals


def test_rotation_then_dropping_the_old_key_keeps_every_instance_readable(
    lake, config, keyring, tmp_path
):
    before = _export_all(lake, keyring, config, tmp_path / "before")
    rotated = keyring.rotate()
    fs = LocalFileSystem()
    with holding(fs, str(lake), None, "test", config.lock) as lock:
        counts = rewrap_lake(fs, LakeLayout(str(lake)), rotated, lock)
    assert counts["packs_rewrapped"] == len(list(lake.glob("pixels/**/*.pack")))
    only_new = rotated.without(keyring.active_kek_id)
    assert _export_all(lake, only_new, config, tmp_path / "after") == before
    # The old key alone can no longer open the re-wrapped keys' packs through the table.
    assert {r["kek_id"] for r in table(lake, "packs").to_pylist()} == {rotated.active_kek_id}
