"""Export of any stored file and of cohorts: every version of a SOP Instance UID, instance ids,
manifests and SQL predicates, checked against what pydicom reads from the landing files.

The lake is a real ingest (de-identification off, so the table's UIDs and dates are the files'
own) of pydicom's test files plus a second version of CT_small.dcm: the same SOP Instance UID,
another patient name, a later mtime. Export runs as a person runs it, in its own process.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from ingest_helpers import run_export, sha256_file
from pydicom.data import get_testdata_file

from dicomlake.config import DeidConfig
from dicomlake.ingest.job import run_ingest
from dicomlake.keyring_file import save_keyring

pytestmark = pytest.mark.spark

FILES = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "JPEG2000.dcm", "rtplan.dcm"]
COHORT = "Modality IN ('CT', 'MR') AND StudyDate >= DATE '2004-01-01'"


@pytest.fixture(scope="module")
def lake(tmp_path_factory, sc, config, keyring):
    """(lake, keyring file, conf file, landing directory)."""
    root = tmp_path_factory.mktemp("cohorts")
    landing, lake = root / "landing", root / "lake"
    landing.mkdir()
    for name in FILES:
        shutil.copy(get_testdata_file(name), landing / name)
    resend = pydicom.dcmread(landing / "CT_small.dcm")
    resend.PatientName = "Resent^With^Changes"
    resend.save_as(landing / "CT_small_resent.dcm")
    os.utime(landing / "CT_small.dcm", (1_600_000_000, 1_600_000_000))
    os.utime(landing / "CT_small_resent.dcm", (1_700_000_000, 1_700_000_000))
    cfg = dataclasses.replace(config, deid=DeidConfig(enabled=False))
    run_ingest(sc, str(landing), str(lake), cfg, keyring)
    keyring_path, conf = root / "keyring.json", root / "conf.yaml"
    save_keyring(str(keyring_path), keyring, cfg)
    conf.write_text("deid:\n  enabled: false\n")
    return lake, keyring_path, conf, landing


def _export(lake, out: Path, *selection: str) -> subprocess.CompletedProcess:
    lake, keyring_path, conf, _ = lake
    return run_export(lake, keyring_path, conf, out, *selection)


def _summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _landing_files(landing: Path) -> list[tuple[Path, pydicom.Dataset]]:
    return [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in sorted(landing.iterdir())]


def _contents(out: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in out.iterdir()}


def test_every_version_of_a_sop_uid_comes_back_under_its_own_name(lake, tmp_path):
    landing = lake[3]
    uid = pydicom.dcmread(landing / "CT_small.dcm").SOPInstanceUID
    old, new = sha256_file(landing / "CT_small.dcm"), sha256_file(landing / "CT_small_resent.dcm")
    assert old != new

    proc = _export(lake, tmp_path / "latest", "--sop", uid)
    assert proc.returncode == 0, proc.stderr
    assert _contents(tmp_path / "latest") == {f"{uid}.dcm": new}

    proc = _export(lake, tmp_path / "all", "--sop", uid, "--all-versions")
    assert proc.returncode == 0, proc.stderr
    assert _contents(tmp_path / "all") == {f"{uid}.dcm": new, f"{uid}.v1-{old[:12]}.dcm": old}
    assert _summary(proc)["files"] == 2 and _summary(proc)["not_found"] == []

    # An older version by its instance id alone, under the same name
    proc = _export(lake, tmp_path / "one", "--instance-id", old)
    assert proc.returncode == 0, proc.stderr
    assert _contents(tmp_path / "one") == {f"{uid}.v1-{old[:12]}.dcm": old}


@pytest.mark.parametrize("all_versions", [False, True])
def test_a_where_cohort_is_what_pydicom_finds_in_the_landing_files(lake, tmp_path, all_versions):
    landing = lake[3]
    files = _landing_files(landing)

    def matches(ds: pydicom.Dataset) -> bool:
        date = ds.get("StudyDate")
        return (
            ds.get("Modality") in ("CT", "MR")
            and bool(date)
            and (datetime.datetime.strptime(date, "%Y%m%d").date() >= datetime.date(2004, 1, 1))
        )

    selected = {ds.SOPInstanceUID for _, ds in files if matches(ds)}
    versions = sorted(
        ((p, ds) for p, ds in files if ds.SOPInstanceUID in selected),
        key=lambda f: f[0].stat().st_mtime,
    )
    expected = {ds.SOPInstanceUID: sha256_file(p) for p, ds in versions}  # latest wins
    if all_versions:
        expected = {sha256_file(p): ds.SOPInstanceUID for p, ds in versions}
    assert 1 < len(selected) < len({ds.SOPInstanceUID for _, ds in files})

    args = ["--where", COHORT] + (["--all-versions"] if all_versions else [])
    proc = _export(lake, tmp_path / "out", *args)
    assert proc.returncode == 0, proc.stderr
    got = _contents(tmp_path / "out")
    if all_versions:
        assert sorted(got.values()) == sorted(expected)
    else:
        assert got == {f"{uid}.dcm": sha for uid, sha in expected.items()}
    studies = Counter(
        ds.StudyInstanceUID for p, ds in versions if sha256_file(p) in set(got.values())
    )
    summary = _summary(proc)
    assert summary["studies"] == dict(studies) and summary["files"] == len(got)
    assert summary["bytes"] == sum(p.stat().st_size for p in (tmp_path / "out").iterdir())


def test_a_manifest_with_a_missing_uid_reports_it_and_exits_1(lake, tmp_path):
    landing = lake[3]
    mr = pydicom.dcmread(landing / "MR_small.dcm").SOPInstanceUID
    plan = sha256_file(landing / "rtplan.dcm")
    manifest = tmp_path / "cohort.txt"
    manifest.write_text(
        f"# the cohort\n{mr}\n\n{plan}   # by instance id\n1.2.3.4.404\n{mr}\n", encoding="utf-8"
    )
    proc = _export(lake, tmp_path / "out", "--manifest", str(manifest))
    assert proc.returncode == 1, proc.stderr
    summary = _summary(proc)
    assert summary["not_found"] == ["1.2.3.4.404"] and summary["files"] == 2
    plan_uid = pydicom.dcmread(landing / "rtplan.dcm").SOPInstanceUID
    assert _contents(tmp_path / "out") == {
        f"{mr}.dcm": sha256_file(landing / "MR_small.dcm"),
        f"{plan_uid}.dcm": plan,
    }


@pytest.mark.parametrize(
    "predicate",
    [
        "1=1; COPY instances TO '{tmp}/leak.csv'",
        "instance_id IN (SELECT * FROM read_csv('{secret}'))",
        "1=1); ATTACH '{tmp}/new.db' AS x; SELECT 1 WHERE (1=1",
        "Modality = ",
        "no_such_column = 1",
    ],
)
def test_what_is_no_predicate_is_refused_by_name(lake, tmp_path, predicate):
    secret = tmp_path / "secret.csv"
    secret.write_text("instance_id\nx\n")
    predicate = predicate.format(tmp=tmp_path, secret=secret)
    before = {p.name for p in tmp_path.iterdir()}
    proc = _export(lake, tmp_path / "out", "--where", predicate)
    assert proc.returncode == 1, proc.stdout
    assert repr(predicate) in proc.stderr and "Traceback" not in proc.stderr
    assert {p.name for p in tmp_path.iterdir()} <= before | {"out"}
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
