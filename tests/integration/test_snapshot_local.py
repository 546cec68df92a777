"""Snapshots, restore, verify and retention on real local directories."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from snapshot_helpers import (
    NEVER,
    RECORD_KEY,
    T0,
    blob,
    make_lake,
    newest,
    objects,
    save,
    signed,
    tree,
    with_snapshot,
    write,
)

from dicomlake.backup import (
    SnapshotResult,
    apply_retention,
    list_snapshots,
    restore,
    take_snapshot,
    verify,
)
from dicomlake.errors import BackupError


def manifest(backup: Path, sid: str) -> dict[str, dict]:
    """A manifest read with plain pyarrow: path -> row."""
    rows = pq.read_table(backup / "manifests" / f"{sid}.parquet").to_pylist()
    return {r["path"]: r for r in rows}


def take(
    lake: Path, backup: Path, mode: str, config, keyring, label: str | None = None
) -> SnapshotResult:
    """``take_snapshot`` of two local directories, labelled ``label`` (default: by the clock)."""
    return take_snapshot(
        str(lake), str(backup), mode, keyring=keyring, config=config, now_label=label
    )


def restored_tree(backup: Path, sid: str, into: Path, config, keyring) -> dict[str, str]:
    restore(str(backup), sid, str(into), keyring=keyring, config=config)
    return tree(into, only_backed_up=False)


@pytest.fixture()
def cfg(config):
    return with_snapshot(config, lag_seconds=0.0)


@pytest.fixture()
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    make_lake(root)
    return root


def test_full_then_incremental_copies_only_new_files(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    full = take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    saved_full = save(lake, tmp_path / "saved-full")
    expected = tree(saved_full)
    assert full.snapshot_id == "20261101T010000Z-full"
    assert set(manifest(backup, full.snapshot_id)) == set(expected)
    assert objects(backup) == set(expected.values())
    assert (full.files, full.objects_copied) == (len(expected), len(set(expected.values())))
    assert full.excluded == len(NEVER)

    write(lake, "pixels/r2/pack-c.pack", blob("pack-c", 30_000), T0 + 500)
    write(lake, "tables/runs/r2.parquet", blob("run2"), T0 + 501)
    before = objects(backup)
    inc = take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    saved_inc = save(lake, tmp_path / "saved-inc")
    assert objects(backup) - before == {
        hashlib.sha256(blob("pack-c", 30_000)).hexdigest(),
        hashlib.sha256(blob("run2")).hexdigest(),
    }
    # The two new files, and the one whose mtime is the full's watermark (lag window, even
    # with lag 0: it may have changed again within the same millisecond); that one is reused.
    assert (inc.files_read, inc.objects_copied, inc.new, inc.lag_window) == (3, 2, 2, 1)
    assert (inc.objects_reused, inc.unchanged) == (1, len(expected) - 1)
    assert inc.base == full.snapshot_id
    assert inc.bytes_copied == 30_000 + 3000
    assert inc.watermark_ms == (T0 + 501) * 1000

    assert restored_tree(backup, full.snapshot_id, tmp_path / "r-full", cfg, keyring) == expected
    assert restored_tree(backup, inc.snapshot_id, tmp_path / "r-inc", cfg, keyring) == tree(
        saved_inc
    )


def test_incremental_catches_deletes_renames_copied_in_and_size_changes(
    tmp_path, lake, cfg, keyring
):
    backup = tmp_path / "backup"
    take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    os.remove(lake / "quarantine/r1/bad.dcm")  # deleted
    os.rename(lake / "pixels/r1/pack-b.pack", lake / "pixels/r1/pack-b2.pack")  # keeps mtime
    write(lake, "quarantine/r0/old.dcm", blob("old"), T0 - 86400)  # copied in with an old mtime
    sized = lake / "tables/frames/part-r1-0.parquet"
    st = os.stat(sized)
    sized.write_bytes(blob("f1-grown", 3500))  # new size, same mtime
    os.utime(sized, ns=(st.st_mtime_ns, st.st_mtime_ns))
    older = lake / "tables/packs/part-r1-0.parquet"  # replaced by an older file
    older.write_bytes(blob("p1-rotated"))
    os.utime(older, ns=((T0 - 5000) * 10**9, (T0 - 5000) * 10**9))
    saved = save(lake, tmp_path / "saved")

    inc = take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    rows = manifest(backup, inc.snapshot_id)
    # A rename is a path gone plus a path come: two deletions.
    assert "quarantine/r1/bad.dcm" not in rows and "pixels/r1/pack-b.pack" not in rows
    assert inc.deleted == 2
    assert rows["pixels/r1/pack-b2.pack"]["reason"] == "renamed_in"
    assert rows["quarantine/r0/old.dcm"]["reason"] == "renamed_in"
    assert rows["tables/frames/part-r1-0.parquet"]["reason"] == "size_changed"
    assert rows["tables/packs/part-r1-0.parquet"]["reason"] == "modified"
    assert (inc.renamed_in, inc.size_changed, inc.modified) == (2, 1, 1)
    # The renamed pack's content is stored already, as is the file at the watermark (re-read
    # in the lag window); the three others are new content.
    assert (inc.objects_copied, inc.objects_reused, inc.lag_window) == (3, 2, 1)
    assert restored_tree(backup, inc.snapshot_id, tmp_path / "r", cfg, keyring) == tree(saved)


def test_lag_window_rereads_files_near_the_watermark(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    cfg = with_snapshot(cfg, lag_seconds=60.0)
    near = write(lake, "tables/runs/r9.parquet", blob("near"), T0 + 1000)  # the watermark
    far = write(lake, "tables/runs/r8.parquet", blob("far"), T0 + 1000 - 600)
    take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    for path, seed in ((near, "near2"), (far, "far2")):  # same size, same mtime, new content
        st = os.stat(path)
        path.write_bytes(blob(seed))
        os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns))

    inc = take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    rows = manifest(backup, inc.snapshot_id)
    assert inc.scan_from_ms == (T0 + 1000 - 60) * 1000
    assert rows["tables/runs/r9.parquet"]["reason"] == "lag_window"
    assert rows["tables/runs/r9.parquet"]["sha256"] == hashlib.sha256(blob("near2")).hexdigest()
    # Outside the window, same path, size and mtime is trusted (the documented quick check).
    assert rows["tables/runs/r8.parquet"]["reason"] == "unchanged"
    assert rows["tables/runs/r8.parquet"]["sha256"] == hashlib.sha256(blob("far")).hexdigest()


def test_in_flight_files_and_mid_publish_runs_are_left_out(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    # Run r3 is mid-publish: intent written, its files moved, the sources table committed
    # (its version 5, after the 4 the intent records), the runs table not yet.
    r3 = ["pixels/r3/pack-p.pack", "tables/sources/r3.parquet", "tables/runs/r3.parquet"]
    for rel in r3:
        write(lake, rel, blob(rel), T0 + 300)
    write(lake, "tables/sources/_delta_log/00000000000000000004.json", blob("s4"), T0 + 200)
    write(lake, "tables/sources/_delta_log/00000000000000000005.json", blob("s5"), T0 + 301)
    write(
        lake,
        "_commits/r3.json",
        json.dumps(
            {"run_id": "r3", "files": r3, "sequence": 3, "versions": {"sources": 4, "runs": 2}}
        ).encode(),
    )
    # Run r4, before r3, committed every table but did not drop its intent: it is complete.
    r4 = ["pixels/r4/pack-q.pack", "tables/runs/r4.parquet"]
    for rel in r4:
        write(lake, rel, blob(rel), T0 + 400)
    write(lake, "tables/frames/_delta_log/00000000000000000008.json", blob("f8"), T0 + 401)
    write(lake, "tables/runs/_delta_log/00000000000000000002.json", blob("u2"), T0 + 401)
    write(
        lake,
        "_commits/r4.json",
        json.dumps(
            {"run_id": "r4", "files": r4, "sequence": 2, "versions": {"frames": 7, "runs": 1}}
        ).encode(),
    )

    snap = take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    paths = set(manifest(backup, snap.snapshot_id))
    assert not paths & set(NEVER)
    assert not any(
        p.startswith(("_staging/", "_commits/")) or p.endswith("._COPYING_") for p in paths
    )
    assert not paths & set(r3)
    assert "tables/sources/_delta_log/00000000000000000005.json" not in paths  # r3's commit
    assert "tables/sources/_delta_log/00000000000000000004.json" in paths  # before r3
    assert set(r4) <= paths
    assert {
        "tables/frames/_delta_log/00000000000000000008.json",
        "tables/runs/_delta_log/00000000000000000002.json",
    } <= paths
    assert snap.runs_excluded == ("r3",)
    # The tables' versions the snapshot holds: r3's commit of sources is not among them.
    assert snap.table_versions == {"frames": 8, "runs": 2, "sources": 4}
    assert list_snapshots(str(backup), config=cfg)[-1].table_versions == snap.table_versions
    # + two intents, r3's three published files and its sources commit
    assert snap.excluded == len(NEVER) + 2 + 3 + 1


def test_differential_reads_everything_since_the_last_full(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    full = take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    at_watermark = newest(lake)
    write(lake, "pixels/r2/pack-c.pack", blob("c"), T0 + 500)
    take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    write(lake, "pixels/r3/pack-d.pack", blob("d"), T0 + 600)
    write(lake, "pixels/r3/pack-e.pack", blob("e"), T0 + 601)
    saved = save(lake, tmp_path / "saved")

    diff = take(lake, backup, "differential", cfg, keyring, "20261103T010000Z")
    rows = manifest(backup, diff.snapshot_id)
    read = {p for p, r in rows.items() if r["reason"] != "unchanged"}
    assert diff.base == full.snapshot_id
    assert read == {
        "pixels/r2/pack-c.pack",
        "pixels/r3/pack-d.pack",
        "pixels/r3/pack-e.pack",
        at_watermark,
    }
    # pack-c and the lag-window file are in the backup already: read, not stored again.
    assert (diff.files_read, diff.objects_copied, diff.objects_reused) == (4, 2, 2)
    assert restored_tree(backup, diff.snapshot_id, tmp_path / "r", cfg, keyring) == tree(saved)

    # An incremental after the differential compares with the differential.
    write(lake, "pixels/r4/pack-f.pack", blob("f"), T0 + 700)
    inc = take(lake, backup, "incremental", cfg, keyring, "20261104T010000Z")
    assert (inc.base, inc.new, inc.objects_copied) == (diff.snapshot_id, 1, 1)


def test_identical_content_is_stored_once(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    write(lake, "quarantine/r1/copy1.dcm", blob("same", 7000), T0 + 50)
    write(lake, "quarantine/r2/copy2.dcm", blob("same", 7000), T0 + 51)
    snap = take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    rows = manifest(backup, snap.snapshot_id)
    digest = hashlib.sha256(blob("same", 7000)).hexdigest()
    assert rows["quarantine/r1/copy1.dcm"]["object"] == rows["quarantine/r2/copy2.dcm"]["object"]
    assert rows["quarantine/r1/copy1.dcm"]["object"] == f"objects/{digest[:2]}/{digest[2:]}"
    assert len(list((backup / "objects" / digest[:2]).glob(digest[2:]))) == 1
    assert snap.objects_copied == len(objects(backup)) == len(set(tree(lake).values()))
    # A second full reads everything again but stores nothing new.
    again = take(lake, backup, "full", cfg, keyring, "20261102T010000Z")
    assert (again.files_read, again.objects_copied) == (snap.files, 0)


def test_verify_names_damaged_and_missing_objects(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    snap = take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    assert verify(str(backup), keyring=keyring, config=cfg).ok
    rows = manifest(backup, snap.snapshot_id)
    damaged, missing = rows["pixels/r1/pack-a.pack"], rows["tables/runs/r1.parquet"]
    obj = backup / damaged["object"]
    data = bytearray(obj.read_bytes())
    data[1234] ^= 0x01
    obj.write_bytes(bytes(data))
    os.remove(backup / missing["object"])

    result = verify(str(backup), snap.snapshot_id, keyring=keyring, config=cfg)
    found = {(p.path, p.object): p.reason for p in result.problems}
    assert set(found) == {
        ("pixels/r1/pack-a.pack", damaged["object"]),
        ("tables/runs/r1.parquet", missing["object"]),
    }
    assert found[("pixels/r1/pack-a.pack", damaged["object"])].startswith("sha256 ")
    assert found[("tables/runs/r1.parquet", missing["object"])] == "missing"
    assert result.objects_checked == len(set(r["object"] for r in rows.values()))
    with pytest.raises(BackupError, match="damaged|cannot restore"):
        restore(str(backup), snap.snapshot_id, str(tmp_path / "r"), keyring=keyring, config=cfg)
    assert not (tmp_path / "r").exists()


def test_an_incremental_stores_again_the_objects_lost_since_its_base(tmp_path, lake, cfg, keyring):
    """Objects of unchanged files deleted or cut short since the full are stored again: the
    incremental refers only to objects it has seen whole, and it verifies and restores."""
    backup = tmp_path / "backup"
    full = take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    rows = manifest(backup, full.snapshot_id)
    cut, gone = rows["pixels/r1/pack-a.pack"], rows["tables/runs/r1.parquet"]
    (backup / cut["object"]).write_bytes((backup / cut["object"]).read_bytes()[:100])
    os.remove(backup / gone["object"])
    inc = take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    again = {
        path: row["reason"]
        for path, row in manifest(backup, inc.snapshot_id).items()
        if row["reason"] == "object_damaged"
    }
    assert again == {cut["path"]: "object_damaged", gone["path"]: "object_damaged"}
    assert verify(str(backup), inc.snapshot_id, keyring=keyring, config=cfg).ok
    expected = tree(lake)
    assert restored_tree(backup, inc.snapshot_id, tmp_path / "r", cfg, keyring) == expected


def test_a_link_in_the_lakes_places_fails_the_snapshot_by_name(tmp_path, lake, cfg, keyring):
    """Packs kept elsewhere behind a link would be left out of the copy: the lake restored from
    it could not rebuild a file. Links where nothing is backed up do not matter."""
    backup = tmp_path / "backup"
    (lake / "pixels").rename(tmp_path / "packs-elsewhere")
    (lake / "pixels").symlink_to(tmp_path / "packs-elsewhere")
    (lake / "_staging").mkdir(exist_ok=True)
    (lake / "_staging" / "link").symlink_to(tmp_path)
    with pytest.raises(BackupError, match=f"{lake}/pixels in the lake is no regular file"):
        take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    assert not (backup / "manifests").exists() or not list((backup / "manifests").iterdir())
    (lake / "pixels").unlink()
    (tmp_path / "packs-elsewhere").rename(lake / "pixels")
    os.mkfifo(lake / "pixels" / "r1" / "fifo.pack")
    with pytest.raises(BackupError, match="fifo.pack in the lake is no regular file"):
        take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    (lake / "pixels" / "r1" / "fifo.pack").unlink()
    assert take(lake, backup, "full", cfg, keyring, "20261101T010000Z").files


@pytest.mark.parametrize("kind", ["link", "folder", "fifo"])
def test_a_manifest_that_is_no_file_stops_every_command_by_name(tmp_path, lake, cfg, keyring, kind):
    """Passed over, its snapshot would be lost to retention, which deletes the objects only
    it names."""
    backup = tmp_path / "backup"
    take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    write(lake, "pixels/r2/pack-c.pack", blob("pack-c", 30_000), T0 + 500)
    newest = take(lake, backup, "full", cfg, keyring, "20261102T010000Z").snapshot_id
    path = backup / "manifests" / f"{newest}.parquet"
    path.rename(tmp_path / "kept.parquet")
    if kind == "link":
        path.symlink_to(tmp_path / "kept.parquet")
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    held = objects(backup)
    for command in (
        lambda: verify(str(backup), keyring=keyring, config=cfg),
        lambda: apply_retention(str(backup), keyring=keyring, config=cfg),
        lambda: list_snapshots(str(backup), config=cfg),
    ):
        with pytest.raises(BackupError, match=f"{path} .*is no regular file"):
            command()
    assert objects(backup) == held


def test_restore_needs_an_empty_target_and_a_known_snapshot(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    snap = take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    busy = tmp_path / "busy"
    write(busy, "x", b"x")
    with pytest.raises(BackupError, match="not empty"):
        restore(str(backup), snap.snapshot_id, str(busy), keyring=keyring, config=cfg)
    with pytest.raises(BackupError, match="no snapshot 20261101T010000Z-incremental"):
        restore(
            str(backup),
            "20261101T010000Z-incremental",
            str(tmp_path / "n"),
            keyring=keyring,
            config=cfg,
        )
    # A link to an empty directory would be replaced by the restored lake, the directory left
    # empty; a file is no directory to restore into
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "link").symlink_to(empty)
    (tmp_path / "file").write_bytes(b"")
    for target, says in (("link", "is a symbolic link"), ("file", "is not a directory")):
        with pytest.raises(BackupError, match=f"restore target .*{target} {says}"):
            restore(
                str(backup), snap.snapshot_id, str(tmp_path / target), keyring=keyring, config=cfg
            )
    assert (tmp_path / "link").is_symlink() and (tmp_path / "file").read_bytes() == b""
    # A mount point cannot be replaced: refused before the copy, not after it
    assert os.path.ismount("/proc")
    with pytest.raises(BackupError, match="restore target /proc is a mount point"):
        restore(str(backup), snap.snapshot_id, "/proc", keyring=keyring, config=cfg)
    empty.chmod(0o750)  # made by the operator: it keeps its mode
    restore(str(backup), snap.snapshot_id, str(empty), keyring=keyring, config=cfg)
    assert tree(empty, only_backed_up=False) == tree(lake)
    assert stat.S_IMODE(empty.stat().st_mode) == 0o750


def test_list_snapshots_and_idempotent_labels(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    first = take(lake, backup, "incremental", cfg, keyring, "20261101T010000Z")
    assert first.mode == "full"  # no base yet
    write(lake, "pixels/r2/pack-c.pack", blob("c", 20_000), T0 + 500)
    second = take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    retry = take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    assert retry.already_committed and retry.snapshot_id == second.snapshot_id
    with pytest.raises(BackupError, match="older than the latest"):
        take(lake, backup, "full", cfg, keyring, "20261101T120000Z")
    infos = list_snapshots(str(backup), config=cfg)
    expected_bytes = sum(
        len(p.read_bytes())
        for p in lake.rglob("*")
        if p.is_file() and p.relative_to(lake).as_posix() in tree(lake)
    )
    assert [(i.snapshot_id, i.mode, i.base) for i in infos] == [
        ("20261101T010000Z-full", "full", None),
        ("20261102T010000Z-incremental", "incremental", "20261101T010000Z-full"),
    ]
    assert (infos[1].files, infos[1].bytes_total, infos[1].bytes_copied) == (
        len(tree(lake)),
        expected_bytes,
        20_000,
    )
    assert json.dumps(infos[1].summary())


def test_unlabelled_snapshots_take_the_filesystem_clock(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    a = take(lake, backup, "full", cfg, keyring)
    b = take(lake, backup, "incremental", cfg, keyring)
    assert a.snapshot_id < b.snapshot_id  # unique and ordered even within one second
    assert b.objects_copied == 0 and b.files_read == b.lag_window


def test_retention_keeps_daily_and_weekly_and_collects_only_unreferenced(
    tmp_path, lake, cfg, keyring
):
    backup = tmp_path / "backup"
    cfg = with_snapshot(cfg, lag_seconds=0.0, keep_daily=2, keep_weekly=2)
    # Mon 2026-11-02 .. Fri 11-13, two a day on the last day; each adds a file, the tuesday
    # one also holds content only it ever sees (written, snapshotted, deleted).
    labels = [
        "20261102T010000Z",
        "20261103T010000Z",
        "20261106T010000Z",
        "20261110T010000Z",
        "20261113T010000Z",
        "20261113T120000Z",
    ]
    sids = []
    for n, label in enumerate(labels):
        write(lake, f"pixels/d{n}/pack.pack", blob(f"day{n}"), T0 + 1000 + n)
        if n == 1:
            write(lake, "quarantine/tmp/only-tuesday.dcm", blob("only-tuesday"), T0 + 999)
        sids.append(take(lake, backup, "incremental", cfg, keyring, label).snapshot_id)
        if n == 1:
            os.remove(lake / "quarantine/tmp/only-tuesday.dcm")
    all_before = objects(backup)
    saved = {s: tree(Path(restored(backup, s, tmp_path, cfg, keyring))) for s in sids}

    result = apply_retention(str(backup), keyring=keyring, config=cfg, today=dt.date(2026, 11, 13))
    # Daily: 11-13 (its newest, 12:00) and 11-10. Weekly: week 46 (11-13 12:00 again) and
    # week 45 (its newest, 11-06).
    assert set(result.kept) == {sids[5], sids[3], sids[2]}
    assert set(result.removed) == {sids[0], sids[1], sids[4]}
    gone = {hashlib.sha256(blob("only-tuesday")).hexdigest()}
    assert all_before - objects(backup) == gone
    assert result.objects_deleted == 1 and result.bytes_freed == 3000
    for s in result.kept:
        shutil.rmtree(tmp_path / f"r-{s}")
        assert tree(Path(restored(backup, s, tmp_path, cfg, keyring))) == saved[s]
    assert verify(str(backup), keyring=keyring, config=cfg).ok


def restored(backup: Path, sid: str, tmp_path: Path, config, keyring) -> str:
    target = tmp_path / f"r-{sid}"
    restore(str(backup), sid, str(target), keyring=keyring, config=config)
    return str(target)


def test_retention_leaves_objects_of_an_unfinished_snapshot(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    stray = write(backup, "objects/ff/" + "f" * 62, b"copied by a killed run")
    (backup / "_tmp" / "20261102T010000Z-incremental").mkdir(parents=True)
    result = apply_retention(str(backup), keyring=keyring, config=cfg, today=dt.date(2026, 11, 2))
    assert stray.exists() and result.objects_deleted == 0
    assert "20261102T010000Z-incremental" in (result.gc_skipped or "")


def _rewrite_record(backup: Path, sid: str, keyring, **changes) -> None:
    """Change keys of a manifest's snapshot record (its footer), keeping its rows, and sign it
    again, as a writer holding the keyring could (an earlier version's record, say)."""
    uri = backup / "manifests" / f"{sid}.parquet"
    table = pq.read_table(uri)
    record = {**json.loads(table.schema.metadata[RECORD_KEY]), **changes}
    meta = {RECORD_KEY: json.dumps(record).encode()}
    rewritten = signed(table.replace_schema_metadata(meta), keyring.secret_for("backup-manifest"))
    pq.write_table(rewritten, uri)


def _same_size_and_mtime(path: Path, data: bytes) -> None:
    st = os.stat(path)
    path.write_bytes(data)
    os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns))


def test_a_file_from_the_future_does_not_raise_the_watermark(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    at_watermark = newest(lake)  # before the future file: the newest of the present
    expected_wm = os.stat(lake / at_watermark).st_mtime_ns // 1_000_000
    future = dt.datetime.now(dt.timezone.utc).timestamp() + 2 * 86400
    write(lake, "tables/runs/_delta_log/00000000000000000001.json", blob("log1"), future)
    full = take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    assert full.watermark_ms == expected_wm
    _same_size_and_mtime(lake / at_watermark, blob("again", (lake / at_watermark).stat().st_size))

    inc = take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    rows = manifest(backup, inc.snapshot_id)
    assert inc.watermark_ms == expected_wm
    assert rows[at_watermark]["reason"] == "lag_window"
    assert rows[at_watermark]["sha256"] == tree(lake)[at_watermark]
    # Read again, as long as its mtime is ahead
    assert rows["tables/runs/_delta_log/00000000000000000001.json"]["reason"] == "lag_window"


def test_a_full_starts_its_watermark_afresh_and_a_base_past_its_start_is_not_trusted(
    tmp_path, lake, cfg, keyring
):
    backup = tmp_path / "backup"
    gone = write(lake, "pixels/r9/gone.pack", blob("gone"), T0 + 5000)
    take(lake, backup, "full", cfg, keyring, "20261101T010000Z")
    gone.unlink()
    full = take(lake, backup, "full", cfg, keyring, "20261102T010000Z")
    assert full.watermark_ms == os.stat(lake / newest(lake)).st_mtime_ns // 1_000_000

    # A watermark two days ahead (as one written before files from the future were left out)
    ahead = int((dt.datetime.now(dt.timezone.utc).timestamp() + 2 * 86400) * 1000)
    _rewrite_record(backup, full.snapshot_id, keyring, watermark_ms=ahead)
    far = lake / "tables/frames/part-r1-0.parquet"  # below the watermark: trusted, else
    _same_size_and_mtime(far, blob("sources-again"))
    inc = take(lake, backup, "incremental", cfg, keyring, "20261103T010000Z")
    assert inc.scan_from_ms is None and inc.files_read == inc.files == len(tree(lake))
    assert manifest(backup, inc.snapshot_id)[far.relative_to(lake).as_posix()]["sha256"] == (
        hashlib.sha256(blob("sources-again")).hexdigest()
    )
    assert inc.watermark_ms == full.watermark_ms


def test_a_label_later_than_now_is_refused(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    now = dt.datetime.now(dt.timezone.utc)
    label = (now + dt.timedelta(hours=2)).strftime("%Y%m%dT%H%M%SZ")
    with pytest.raises(BackupError, match=f"label {label} is later than this host's clock .*1 h"):
        take(lake, backup, "full", cfg, keyring, label)
    assert not backup.exists()
    soon = (now + dt.timedelta(minutes=30)).strftime("%Y%m%dT%H%M%SZ")
    assert take(lake, backup, "full", cfg, keyring, soon).files

    # A backup that holds a label from the future already: no label is made after it.
    shutil.copy(
        backup / "manifests" / f"{soon}-full.parquet",
        backup / "manifests" / "20300101T000000Z-full.parquet",
    )
    with pytest.raises(BackupError, match="20300101T000000Z-full is labelled in the future"):
        take(lake, backup, "incremental", cfg, keyring)


def test_a_label_taken_by_another_mode_or_lake_is_refused(tmp_path, lake, cfg, keyring):
    backup = tmp_path / "backup"
    first = take(lake, backup, "incremental", cfg, keyring, "20261101T010000Z")
    # The same call again: the full it became (it had no base) is the answer.
    again = take(lake, backup, "incremental", cfg, keyring, "20261101T010000Z")
    assert again.already_committed and again.snapshot_id == first.snapshot_id
    take(lake, backup, "incremental", cfg, keyring, "20261102T010000Z")
    other = tmp_path / "other-lake"
    make_lake(other)
    for lake_given, mode in [(lake, "full"), (lake, "differential"), (other, "incremental")]:
        with pytest.raises(BackupError) as err:
            take(lake_given, backup, mode, cfg, keyring, "20261102T010000Z")
        assert (
            f"taken by 20261102T010000Z-incremental of {lake}; this call asks for a {mode} "
            f"snapshot of {lake_given}"
        ) in str(err.value)
