"""An instance without SOPInstanceUID (0008,0018) is named by its file meta's
MediaStorageSOPInstanceUID (0002,0003), as DCMTK reads it: a real ingest of CT_small with the
element removed by pydicom, the pseudonym checked against the documented algorithm, and the
export checked byte for byte."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import pydicom
import pytest
from ingest_helpers import ref_uid, table, with_paths
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO

from dicomlake.cli import print_ingest_report
from dicomlake.ingest.job import run_ingest
from dicomlake.lake.export import export_instances
from dicomlake.lake.identities import read_identities

pytestmark = pytest.mark.spark

CT = Path(get_testdata_file("CT_small.dcm"))


def _without_sop_uid(keep_meta_uid: bool) -> tuple[bytes, str]:
    """CT_small without (0008,0018); without (0002,0003) too unless ``keep_meta_uid``.
    Returns the bytes and the meta UID as pydicom reads it."""
    ds = pydicom.dcmread(CT)
    uid = str(ds.file_meta.MediaStorageSOPInstanceUID)
    del ds.SOPInstanceUID
    if not keep_meta_uid:
        del ds.file_meta.MediaStorageSOPInstanceUID
    out = DicomBytesIO()
    with warnings.catch_warnings():  # pydicom warns on the missing meta element it writes
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=False)
    data = out.getvalue()
    assert (b"\x08\x00\x18\x00" not in data) and ((uid.encode() in data) == keep_meta_uid)
    return data, uid


def test_the_file_meta_names_an_instance_without_sop_instance_uid(tmp_path, sc, config, keyring):
    landing, lake, out = tmp_path / "landing", tmp_path / "lake", tmp_path / "out"
    landing.mkdir()
    meta_named, uid = _without_sop_uid(keep_meta_uid=True)
    (landing / "meta-named.dcm").write_bytes(meta_named)
    (landing / "unnamed.dcm").write_bytes(_without_sop_uid(keep_meta_uid=False)[0])
    (landing / "good.dcm").write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())

    summary = run_ingest(sc, str(landing), str(lake), config, keyring)

    assert summary.ingested == 2 and summary.sop_uid_from_meta == 1
    assert summary.reasons == {"no_sop_instance_uid": 1}
    errors = with_paths(table(lake, "errors").to_pylist(), keyring, landing.iterdir())
    assert [Path(r["source_path"]).name for r in errors] == ["unnamed.dcm"]
    rows = with_paths(table(lake, "instances").to_pylist(), keyring, landing.iterdir())
    by_name = {Path(r["source_path"]).name: r for r in rows}
    row = by_name["meta-named.dcm"]
    pseudonym = ref_uid(keyring.secret_for("pseudonym"), uid)
    assert row["SOPInstanceUID"] == pseudonym and row["sop_uid_from_meta"] is True
    assert by_name["good.dcm"]["sop_uid_from_meta"] is False
    # The header holds no (0008,0018) and no file meta: the original UID is nowhere
    assert "00080018" not in json.loads(row["header_json"])
    assert uid not in json.dumps(rows, default=str)
    frames = table(lake, "frames").to_pylist()
    assert {r["SOPInstanceUID"] for r in frames if r["instance_id"] == row["instance_id"]} == {
        pseudonym
    }
    identities = {
        r["instance_id"]: r for r in read_identities(str(lake), keyring, config).to_pylist()
    }
    assert identities[row["instance_id"]]["original_SOPInstanceUID"] == uid
    assert identities[row["instance_id"]]["SOPInstanceUID"] == pseudonym

    export_instances(str(lake), keyring, config, out, sop=pseudonym)
    exported = out / f"{pseudonym}.dcm"
    assert exported.read_bytes() == meta_named
    assert hashlib.sha256(meta_named).hexdigest() == row["instance_id"]

    report = io.StringIO()
    print_ingest_report(summary.as_dict(), report)
    assert "1 instance(s) without SOPInstanceUID (0008,0018)" in report.getvalue()
