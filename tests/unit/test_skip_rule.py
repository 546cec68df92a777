"""One rule for hidden and temporary names: the landing plan, the backup scan and the Parquet
table listing give the same verdict for a file's name."""

from __future__ import annotations

import pytest

from dicomlake.backup.scan import is_backed_up
from dicomlake.ingest.plan import is_candidate
from dicomlake.lake.parquet import parquet_files
from dicomlake.storage.local import LocalFileSystem

# name -> whether a listing keeps it: the test's own statement of the rule
NAMES = {
    "IM0001.dcm": True,
    "a.b.c": True,
    "x~y.dcm": True,
    "part-0.parquet": True,
    "x.dcm._COPYING_": False,
    "x.tmp": False,
    "x.part": False,
    "x.crdownload": False,
    "x.dcm~": False,
    ".hidden.dcm": False,
    "_SUCCESS": False,
    ".part-0.parquet.crc": False,
}


@pytest.mark.parametrize(("name", "kept"), sorted(NAMES.items()))
def test_landing_and_backup_skip_the_same_names(name, kept):
    assert is_candidate(f"/landing/2024/{name}", "/landing") is kept
    assert is_backed_up(f"quarantine/r1/{name}") is kept


def test_table_listings_skip_hidden_parquet_files(tmp_path):
    table = tmp_path / "tables" / "frames"
    table.mkdir(parents=True)
    for name in ("part-0.parquet", ".part-1.parquet", "_part-2.parquet", "part-3.parquet.tmp"):
        (table / name).write_bytes(b"x")
    found = parquet_files(LocalFileSystem(), str(table))
    assert sorted(p.rsplit("/", 1)[-1] for p in found) == ["part-0.parquet"]


def test_hidden_directories_are_skipped_below_the_landing_root_and_by_the_backup():
    """Both look at every component below their root, the backup at all but the tables'
    `_delta_log`; the landing root's own path may hold any names."""
    assert not is_candidate("/landing/_temporary/0/IM0001.dcm", "/landing")
    assert not is_candidate("/landing/a/.Trash/IM0001.dcm", "/landing/")
    assert is_candidate("/data/_incoming/.x/landing/a/IM0001.dcm", "/data/_incoming/.x/landing")
    assert is_candidate("/data/_in/IM0001.dcm", "/data/_in/IM0001.dcm")  # a zone of one file
    assert not is_backed_up("quarantine/_old/IM0001.dcm")
    assert is_backed_up("tables/frames/_delta_log/00000000000000000001.json")
