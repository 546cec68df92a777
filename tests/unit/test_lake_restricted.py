"""The restricted tables read each row once, as a rewrite stopped halfway leaves them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from dicomlake.cli import main
from dicomlake.config import LockConfig
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import LakeError
from dicomlake.lake import restricted
from dicomlake.lake.keyring_binding import bind_keyring
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.lake.paths import read_paths
from dicomlake.storage.local import LocalFileSystem

AT = datetime(2026, 12, 1, tzinfo=timezone.utc)


def _path_row(n: int, path: str) -> dict[str, object]:
    return {"source_path_id": f"{n:032x}", "ingest_run_id": "r1", "source_path": path}


def test_a_row_written_twice_is_read_once_distinct_rows_stay(tmp_path):
    fs, keyring = LocalFileSystem(), Keyring.generate("x25519")
    rows = [_path_row(1, "/landing/a.dcm"), _path_row(2, "/landing/b.dcm")]
    old, new = str(tmp_path / "part-r1.parquet"), str(tmp_path / "part-rewrap.parquet")
    restricted.write_rows(fs, old, "paths", rows, keyring)
    # A rewrite under a new KEK that stopped after it published its file: both are there
    rotated = keyring.rotate()
    restricted.write_rows(fs, new, "paths", rows, rotated)
    assert restricted.read_rows(fs, [old, new], "paths", rotated).to_pylist() == rows
    # Rows differing only in an encrypted column are two rows, a subset of columns too
    other = {**rows[0], "source_path": "/landing/other.dcm"}
    restricted.write_rows(fs, new, "paths", [*rows, other], rotated)
    assert restricted.read_rows(fs, [old, new], "paths", rotated).to_pylist() == [*rows, other]
    ids = restricted.read_rows(fs, [old, new], "paths", rotated, ["source_path_id"])
    assert ids.column("source_path_id").to_pylist() == [f"{1:032x}", f"{2:032x}", f"{1:032x}"]


def test_reidentify_gives_a_row_written_twice_once(tmp_path, capsys, config):
    fs, keyring = LocalFileSystem(), Keyring.generate("symmetric")
    lake, keyring_path = tmp_path / "lake", tmp_path / "k.json"
    (lake / "tables").mkdir(parents=True)
    with holding(fs, str(lake), None, "test", LockConfig()) as lock:
        bind_keyring(fs, LakeLayout(str(lake)), keyring, lock)
    keyring_path.write_bytes(keyring.to_bytes())
    keyring_path.chmod(0o600)
    row = {
        "instance_id": "ab" * 32,
        "PatientID": "2.25.42",
        "ingest_run_id": "r1",
        "ingested_at": AT,
        "date_shift_days": -3,
        "original_PatientID": "DOE-1",
        "original_uids": "{}",
    }
    for name in ("part-r1-t0-a0.parquet", "part-rewrap-20261201T000000000000Z.parquet"):
        uri = str(lake / "restricted" / "identities" / name)
        restricted.write_rows(fs, uri, "identities", [row], keyring)
    capsys.readouterr()
    argv = ["reidentify", "--lake", str(lake), "--keyring", str(keyring_path)]
    assert main([*argv, "--pseudonym", "2.25.42"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["original"] for r in lines[:-1]] == ["DOE-1"] and lines[-1]["rows"] == 1


def test_a_damaged_restricted_file_is_named(tmp_path, config):
    fs, keyring = LocalFileSystem(), Keyring.generate("symmetric")
    uri = tmp_path / "lake" / "restricted" / "paths" / "part-r1.parquet"
    restricted.write_rows(fs, str(uri), "paths", [_path_row(1, "/landing/a.dcm")], keyring)
    uri.write_bytes(uri.read_bytes()[:100])
    with pytest.raises(LakeError, match=f"{uri} is not a readable Parquet file"):
        restricted.read_rows(fs, [str(uri)], "paths", keyring)
    with pytest.raises(LakeError, match=f"{uri} is not a readable Parquet file"):
        read_paths(str(tmp_path / "lake"), keyring, config)
