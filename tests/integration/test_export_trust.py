"""Export trusts only what is sealed: hostile UIDs cannot name a path outside ``--out``, and an
edited table row cannot hand out another instance's file.

The lakes are real ingests of pydicom's test files; the hostile files are those files rewritten
by pydicom with another SOPInstanceUID. Export runs as a person runs it (``dicomlake export`` in
its own process) where its exit code and output directory matter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pydicom
import pytest
from deltalake import DeltaTable, write_deltalake
from ingest_helpers import run_export, sha256_file, table
from pydicom.data import get_testdata_file

from dicomlake.config import DeidConfig
from dicomlake.ingest.job import run_ingest
from dicomlake.keyring_file import save_keyring
from dicomlake.lake.export import export_instances

pytestmark = [
    pytest.mark.spark,
    # pydicom warns as the tests write and read the hostile UIDs
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
    pytest.mark.filterwarnings("ignore:The value length:UserWarning"),
]


HOSTILE = [
    "../../escaped",
    "<absolute>",  # an absolute path in the test's own directory, made by the fixture
    "1.2.3/../../up",
    "..",
    "1.2.\x01ctl",
    "9" * 65,  # the DICOM grammar, one digit too long
    "C:\\evil",  # a backslash: DICOM's value separator, joined again in the table
    "1.2..3",
]


def _expected_name(uid: str) -> str:
    """The README's scheme, written again: digits joined by single dots, at most 64, as they
    are; anything else by the SHA-256 of its UTF-8 bytes."""
    if len(uid) <= 64 and re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid):
        return f"{uid}.dcm"
    return "uid-" + hashlib.sha256(uid.encode()).hexdigest() + ".dcm"


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hostile_lake(tmp_path_factory, sc, config, keyring):
    """A lake without de-identification holding files whose SOPInstanceUIDs are hostile:
    (root, lake, keyring file, conf file, {uid: original file})."""
    root = tmp_path_factory.mktemp("hostile")
    landing, lake = root / "landing", root / "lake"
    landing.mkdir()
    files = {}
    absolute = str(root / "escaped-absolute")
    for n, uid in enumerate(HOSTILE):
        uid = absolute if uid == "<absolute>" else uid
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        path = landing / f"f{n}.dcm"
        ds.save_as(path)
        files[uid] = path
    cfg = dataclasses.replace(config, deid=DeidConfig(enabled=False))
    run_ingest(sc, str(landing), str(lake), cfg, keyring)
    keyring_path, conf = root / "keyring.json", root / "conf.yaml"
    save_keyring(str(keyring_path), keyring, cfg)
    conf.write_text("deid:\n  enabled: false\n")
    return root, lake, keyring_path, conf, files


def test_hostile_uids_are_ingested_as_they_are(hostile_lake):
    _, lake, _, _, files = hostile_lake
    rows = table(lake, "instances").to_pylist()
    assert {r["SOPInstanceUID"] for r in rows} == set(files)


@pytest.mark.parametrize("uid", ["../../escaped", "<absolute>", "1.2.3/../../up", ".."])
def test_the_command_writes_a_hostile_uid_inside_out(hostile_lake, tmp_path, uid):
    root, lake, keyring_path, conf, files = hostile_lake
    uid = str(root / "escaped-absolute") if uid == "<absolute>" else uid
    before = _files_under(root)
    out = tmp_path / "a" / "b" / "out"
    proc = run_export(lake, keyring_path, conf, out, "--sop", uid)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.iterdir()] == [_expected_name(uid)]
    assert sha256_file(out / _expected_name(uid)) == sha256_file(files[uid])
    assert _files_under(tmp_path) == {out / _expected_name(uid)}
    assert _files_under(root) == before


def test_every_hostile_uid_gets_a_safe_name(hostile_lake, config, keyring, tmp_path):
    _, lake, _, _, files = hostile_lake
    cfg = dataclasses.replace(config, deid=DeidConfig(enabled=False))
    for uid, source in files.items():
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        export_instances(str(lake), keyring, cfg, out, sop=uid)
        (exported,) = out.iterdir()
        assert exported.name == _expected_name(uid)
        assert len(exported.name) <= 72 and not re.search(r"[/\\\x00-\x1f]", exported.name)
        assert sha256_file(exported) == sha256_file(source)


def test_exported_files_are_private_whatever_the_umask(lake, tmp_path):
    """The files hold the instances as received, PHI included: 0600 under a umask of 022, in
    an --out made 0700; a symlink where a file goes is replaced, never written through."""
    lake, keyring_path, conf, (x, y), _ = lake
    out, outside = tmp_path / "made" / "out", tmp_path / "outside.txt"
    outside.write_text("not to be overwritten")
    out.mkdir(parents=True)
    (out / f"{x['SOPInstanceUID']}.dcm").symlink_to(outside)
    old = os.umask(0o022)
    try:
        proc = run_export(lake, keyring_path, conf, out, "--study", x["StudyInstanceUID"])
        fresh = tmp_path / "fresh"
        assert run_export(lake, keyring_path, conf, fresh, "--where", "true").returncode == 0
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    exported = out / f"{x['SOPInstanceUID']}.dcm"
    assert not exported.is_symlink() and sha256_file(exported) == x["source_sha256"]
    assert outside.read_text() == "not to be overwritten"
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert sorted(stat.S_IMODE(p.stat().st_mode) for p in fresh.iterdir()) == [0o600, 0o600]
    assert [p.name for p in out.iterdir()] == [exported.name]  # no temporary file left


@pytest.mark.parametrize("inside", ["exported", "pixels", "tables/instances/x", "linked"])
def test_an_export_into_a_lake_is_refused_before_anything_is_written(lake, tmp_path, inside):
    """Every snapshot of the lake would copy the identified files, in clear."""
    lake, keyring_path, conf, _, _ = lake
    out = lake / inside
    if inside == "linked":  # a link elsewhere does not hide the lake
        (tmp_path / "link").symlink_to(lake / "pixels")
        out = tmp_path / "link" / "out"
    before = _files_under(lake)
    proc = run_export(lake, keyring_path, conf, out, "--where", "true")
    assert proc.returncode == 1 and f"is in the lake at {lake}" in proc.stderr, proc.stderr
    assert _files_under(lake) == before
    assert out.exists() == (inside == "pixels")


def test_an_export_of_nothing_found_leaves_no_out(lake, tmp_path):
    lake, keyring_path, conf, _, _ = lake
    out = tmp_path / "out"
    proc = run_export(lake, keyring_path, conf, out, "--study", "1.2.3")
    assert proc.returncode == 1
    assert json.loads(proc.stdout.splitlines()[-1])["not_found"] == ["1.2.3"]
    assert not out.exists()


def test_a_keyring_kept_in_a_lake_is_refused(lake, tmp_path):
    """Every snapshot of the lake would copy it: a backup holding the keys to itself."""
    lake, keyring_path, conf, _, _ = lake
    inside = lake / "keyring.json"
    inside.write_bytes(keyring_path.read_bytes())
    inside.chmod(0o600)
    proc = run_export(lake, inside, conf, tmp_path / "out", "--where", "true")
    assert proc.returncode == 1, proc.stderr
    assert f"keyring '{inside}' is in the lake at {lake}" in proc.stderr
    assert not (tmp_path / "out").exists()


# -- edited table rows


@pytest.fixture
def lake(tmp_path, sc, config, keyring):
    """A de-identifying lake of two real instances of different studies:
    (lake, keyring file, conf file, [instances rows], {instance_id: source file})."""
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    sources = {}
    for name in ("CT_small.dcm", "MR_small.dcm"):
        data = Path(get_testdata_file(name)).read_bytes()
        (landing / name).write_bytes(data)
        sources[hashlib.sha256(data).hexdigest()] = landing / name
    run_ingest(sc, str(landing), str(lake), config, keyring)
    keyring_path, conf = tmp_path / "keyring.json", tmp_path / "conf.yaml"
    save_keyring(str(keyring_path), keyring, config)
    conf.write_text("deid:\n  enabled: true\n")
    rows = sorted(table(lake, "instances").to_pylist(), key=lambda r: r["SOPInstanceUID"])
    assert len(rows) == 2 and rows[0]["StudyInstanceUID"] != rows[1]["StudyInstanceUID"]
    return lake, keyring_path, conf, rows, sources


def _edit_rows(lake: Path, table_name: str, edit) -> None:
    """Commit a new version of a table with ``edit(row)`` applied to each row, as someone with
    write access to the lake's tables could (through the table's log, which readers follow)."""
    path = str(lake / "tables" / table_name)
    original = DeltaTable(path).to_pyarrow_table()
    rows = original.to_pylist()
    new = [edit(dict(r)) for r in rows]
    assert sum(a != b for a, b in zip(rows, new, strict=True)) == 1
    write_deltalake(
        path,
        original.from_pylist(new, schema=original.schema),
        mode="overwrite",
        partition_by=DeltaTable(path).metadata().partition_columns or None,
    )


def test_an_instance_row_pointed_at_another_file_is_refused(lake, tmp_path):
    lake, keyring_path, conf, (x, y), sources = lake

    def point_x_at_y(row):
        if row["SOPInstanceUID"] == x["SOPInstanceUID"]:
            row["instance_id"], row["source_sha256"] = y["instance_id"], y["source_sha256"]
        return row

    # Untouched, X exports as its own file.
    out = tmp_path / "ok"
    assert run_export(lake, keyring_path, conf, out, "--sop", x["SOPInstanceUID"]).returncode == 0
    assert sha256_file(out / f"{x['SOPInstanceUID']}.dcm") == x["source_sha256"]

    _edit_rows(lake, "instances", point_x_at_y)
    out = tmp_path / "out"
    proc = run_export(lake, keyring_path, conf, out, "--sop", x["SOPInstanceUID"])
    assert proc.returncode == 1, proc.stderr
    assert "SOPInstanceUID" in proc.stderr and "row was changed" in proc.stderr
    assert not out.exists()  # made by the export, which wrote nothing: not left behind
    assert sources[y["instance_id"]].exists()  # Y's own file is what the row pointed at


def test_a_row_moved_into_another_study_fails_the_wholerun_export(lake, tmp_path):
    lake, keyring_path, conf, (x, y), _ = lake

    def move_y_into_xs_study(row):
        if row["SOPInstanceUID"] == y["SOPInstanceUID"]:
            row["StudyInstanceUID"] = x["StudyInstanceUID"]
        return row

    _edit_rows(lake, "instances", move_y_into_xs_study)
    out = tmp_path / "out"
    proc = run_export(lake, keyring_path, conf, out, "--study", x["StudyInstanceUID"])
    assert proc.returncode == 1, proc.stderr
    assert "StudyInstanceUID" in proc.stderr
    assert not out.exists()  # not even X's, which passed


def test_frames_rows_pointed_at_another_instances_chunks_are_refused(lake, tmp_path):
    lake, keyring_path, conf, (x, y), _ = lake
    frames = table(lake, "frames").to_pylist()
    y_prefix = next(
        r for r in frames if r["instance_id"] == y["instance_id"] and r["chunk_kind"] == "prefix"
    )

    def x_prefix_from_y(row):
        if row["instance_id"] == x["instance_id"] and row["chunk_kind"] == "prefix":
            for key in ("pack_path", "offset", "length", "codec", "raw_length", "raw_sha256"):
                row[key] = y_prefix[key]
        return row

    _edit_rows(lake, "frames", x_prefix_from_y)
    out = tmp_path / "out"
    proc = run_export(lake, keyring_path, conf, out, "--sop", x["SOPInstanceUID"])
    assert proc.returncode == 1, proc.stderr
    assert x["instance_id"] in proc.stderr  # the chunk does not open as X's
    assert not out.exists()
