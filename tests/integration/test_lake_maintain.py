"""`dicomlake maintain` on a lake of several real runs: compaction keeps every row, older versions
stay readable until the retention has passed, vacuum then deletes only the replaced files, and
the next run goes on with the next sequence number."""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pydicom
import pytest
from deltalake import DeltaTable
from ingest_helpers import date_back_removals, sha256_file, table

from dicomlake.cli import main
from dicomlake.config import Config
from dicomlake.ingest.job import run_ingest
from dicomlake.lake.export import export_instances
from dicomlake.lake.lock import holding
from dicomlake.lake.maintain import maintain_lake
from dicomlake.samples import sample_files
from dicomlake.storage.local import LocalFileSystem

pytestmark = [pytest.mark.spark, pytest.mark.slow]

FIRST = 36  # sample files ingested in three runs; the next run takes one more
TABLES = ("instances", "frames", "elements", "errors", "sources", "runs", "packs")


def _maintain(lake: Path, config: Config) -> dict:
    """What `dicomlake maintain` does: maintain the lake holding its lock."""
    with holding(LocalFileSystem(), str(lake), None, "maintain", config.lock) as lock:
        return maintain_lake(str(lake), config, lock)


def _rows(lake: Path, name: str, version: int | None = None) -> list[tuple]:
    """Every row of a table as sortable tuples (deltalake's own reading, through the log)."""
    t = DeltaTable(str(lake / "tables" / name), version=version).to_pyarrow_table()
    return sorted(tuple(repr(v) for v in row.values()) for row in t.to_pylist())


def _live(lake: Path, name: str) -> set[str]:
    """The data files of a table's current version, relative to the table: its log's paths,
    percent-decoded (Delta's protocol)."""
    actions = DeltaTable(str(lake / "tables" / name)).get_add_actions(flatten=True)
    return {unquote(path) for path in actions.column("path").to_pylist()}


def _on_disk(lake: Path, name: str) -> set[str]:
    root = lake / "tables" / name
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*.parquet")
        if "_delta_log" not in p.parts
    }


@pytest.fixture(scope="module")
def lake_of_runs(tmp_path_factory, sc, config, keyring):
    """Three runs, each of small tasks (many small files per table), in a lake whose path a
    URI would percent-encode."""
    root = tmp_path_factory.mktemp("maintain")
    landing, lake = root / "landing", root / "lake #1 é"
    small = dataclasses.replace(
        config, ingest=dataclasses.replace(config.ingest, task_bytes=200_000)
    )
    files = sample_files()[:FIRST]
    for batch in (files[:12], files[12:24], files[24:]):
        for name, src in batch:
            target = landing / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        run_ingest(sc, str(landing), str(lake), small, keyring)
    return landing, lake, small


def test_maintain_while_another_holds_the_lake_exits_4_and_changes_nothing(lake_of_runs):
    _, lake, config = lake_of_runs
    versions = {name: DeltaTable(str(lake / "tables" / name)).version() for name in TABLES}
    with holding(LocalFileSystem(), str(lake), None, "ingest", config.lock):
        assert main(["maintain", "--lake", str(lake)]) == 4
    assert {n: DeltaTable(str(lake / "tables" / n)).version() for n in TABLES} == versions


def test_compaction_keeps_every_row_and_vacuum_waits_for_the_retention(
    lake_of_runs, sc, keyring, tmp_path
):
    landing, lake, config = lake_of_runs
    before = {name: _rows(lake, name) for name in TABLES}
    versions = {name: DeltaTable(str(lake / "tables" / name)).version() for name in TABLES}
    files = {name: _live(lake, name) for name in TABLES}
    assert len(before["runs"]) == 3 and len(files["frames"]) > 3

    result = _maintain(lake, config)

    for name in TABLES:
        assert _rows(lake, name) == before[name], name
        now = _live(lake, name)
        partitions = {f.rsplit("/", 1)[0] if "/" in f else "" for f in files[name]}
        assert len(now) == len(partitions), name  # one file per partition: all are small
        assert result[name]["files_before"] == len(files[name])
        assert result[name]["files_after"] == len(now)
        # The replaced files stay (retention: a week), so the version before still reads.
        assert files[name] <= _on_disk(lake, name)
        assert _rows(lake, name, versions[name]) == before[name]
        assert result[name]["files_vacuumed"] == 0
        assert list((lake / "tables" / name / "_delta_log").glob("*.checkpoint.parquet"))

    # The pixel store reads the compacted frames and packs: exports are still byte exact.
    rows = table(lake, "instances").to_pylist()
    sops = Counter(r["SOPInstanceUID"] for r in rows)
    some = next(r for r in rows if sops[r["SOPInstanceUID"]] == 1)  # one version: exported
    out = tmp_path / "out"
    export_instances(str(lake), keyring, config, out, sop=some["SOPInstanceUID"])
    assert sha256_file(out / f"{some['SOPInstanceUID']}.dcm") == some["source_sha256"]

    # Once the retention has passed (the removals are dated back past it), vacuum deletes
    # exactly the replaced files.
    for name in TABLES:
        date_back_removals(lake / "tables" / name, hours=2)
    short = dataclasses.replace(
        config, maintain=dataclasses.replace(config.maintain, retention_hours=1.0)
    )
    again = _maintain(lake, short)
    for name in TABLES:
        now = _live(lake, name)
        replaced = files[name] - now
        assert replaced or len(files[name]) == 1, name
        assert again[name]["files_vacuumed"] == len(replaced), name
        assert _on_disk(lake, name) == now, name
        assert _rows(lake, name) == before[name]

    # The next run goes on from the sequence the compacted tables carry.
    # (one whose SOPInstanceUID no earlier file has, so only the new run holds it)
    earlier = {_sop(path) for _, path in sample_files()[:FIRST]}
    name, src = next(f for f in sample_files()[FIRST:] if _sop(f[1]) not in earlier | {None})
    (landing / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, landing / name)
    summary = run_ingest(sc, str(landing), str(lake), config, keyring)
    assert summary.files_seen == 1
    runs = DeltaTable(str(lake / "tables" / "runs"))
    assert runs.transaction_version("dicomlake-ingest") == 4
    assert len(_rows(lake, "runs")) == 4
    assert len(_rows(lake, "sources")) == len(before["sources"]) + 1

    # Time travel: as of the version before that run, the lake has no such instance.
    new = next(
        r for r in table(lake, "instances").to_pylist() if r["ingest_run_id"] == summary.run_id
    )
    instances_before = DeltaTable(str(lake / "tables" / "instances")).version() - 1
    old = export_instances(
        str(lake),
        keyring,
        config,
        tmp_path / "old",
        sop=new["SOPInstanceUID"],
        as_of=instances_before,
    )
    assert (old["files"], old["not_found"]) == (0, [new["SOPInstanceUID"]])
    export_instances(str(lake), keyring, config, tmp_path / "new", sop=new["SOPInstanceUID"])
    assert sha256_file(tmp_path / "new" / f"{new['SOPInstanceUID']}.dcm") == new["source_sha256"]


def _sop(path: Path) -> str | None:
    with warnings.catch_warnings():  # pydicom's warnings on odd files are errors in tests
        warnings.simplefilter("ignore")
        try:
            return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)
        except Exception:
            return None
