"""A task keeps header values outside their VR's rules as they were read, and does not spend
pydicom's per-value checks (and a warning in the executor log for each) on finding them."""

from __future__ import annotations

import logging
import warnings

import pyarrow.parquet as pq
import pydicom
from pydicom.data import get_testdata_file

from dicomlake.ingest.worker import TaskContext, process_task
from dicomlake.lake.commit import staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.storage import filesystem_for

# Kept by de-identification, each outside its VR's rules (PS3.5 table 6.2-1)
ODD = {
    "SliceThickness": "1.000000000000000001",  # DS: 20 characters, at most 16
    "ImageType": "original\\primary\\axial",  # CS: upper case only
    "Manufacturer": "ACME" * 17,  # LO: at most 64 characters
}


def test_values_outside_their_vr_rules_are_kept_as_read_without_a_warning(
    tmp_path, config, keyring, caplog
):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    with pydicom.config.disable_value_validation():  # no warning while writing them
        for keyword, text in ODD.items():
            setattr(ds, keyword, text)
    ds.save_as(landing / "odd.dcm")
    fs = filesystem_for(str(landing), config.hdfs)
    ctx = TaskContext("r1", str(lake), config, keyring.to_bytes(), 1_700_000_000_000)

    with warnings.catch_warnings(record=True) as warned, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        result = process_task(0, 0, fs.list_files(str(landing)), str(landing), ctx, frozenset())

    assert [s["outcome"] for s in result.sources] == ["ingested"]
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    assert not [w for w in warned if "pydicom" in w.filename]
    (elements,) = [p for p in result.staged if p.startswith("tables/elements/")]
    rows = pq.read_table(staged(LakeLayout(str(lake)), "r1", elements))
    kept = {r["keyword"]: r["value_text"] for r in rows.to_pylist() if r["keyword"] in ODD}
    assert kept == ODD
