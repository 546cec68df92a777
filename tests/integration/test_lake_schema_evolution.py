"""Columns added to the lake's schema reach an existing lake on its next run: the table's schema
gains them (nullable), rows written before read them as null, new rows have their values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from deltalake import DeltaTable, write_deltalake
from ingest_helpers import landing_files, with_paths
from pydicom.data import get_testdata_file

from dicomlake.ingest.job import run_ingest
from dicomlake.lake.schemas import INSTANCE_PARTITIONS

pytestmark = [pytest.mark.spark]

# The acquisition parameters promoted since, and how each attribute's VR reads.
ADDED = {
    "KVP": float,
    "ExposureTime": int,
    "EchoTime": float,
    "RepetitionTime": float,
    "MagneticFieldStrength": float,
    "ConvolutionKernel": str,
    "SliceLocation": float,
    "ContrastBolusAgent": str,
}
BEFORE = ["rtplan.dcm", "JPEG2000.dcm", "liver_1frame.dcm"]
AFTER = ["CT_small.dcm", "MR_small.dcm"]


def _land(landing: Path, names: list[str]) -> None:
    landing.mkdir(exist_ok=True)
    for name in names:
        shutil.copy2(get_testdata_file(name), landing / name)


def _write_older_lake(lake: Path) -> None:
    """Rewrite the instances table as a lake from before the columns existed holds it: the same
    rows, without the columns, in a table whose schema never had them."""
    path = lake / "tables" / "instances"
    rows = DeltaTable(str(path)).to_pyarrow_table()
    older = rows.drop_columns(list(ADDED))
    shutil.rmtree(path)
    write_deltalake(str(path), older, partition_by=list(INSTANCE_PARTITIONS))
    assert not set(ADDED) & set(DeltaTable(str(path)).to_pyarrow_table().column_names)


def test_new_columns_reach_a_lake_written_before_them(tmp_path, sc, spark, config, keyring):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    _land(landing, BEFORE)
    run_ingest(sc, str(landing), str(lake), config, keyring)
    _write_older_lake(lake)

    _land(landing, AFTER)
    summary = run_ingest(sc, str(landing), str(lake), config, keyring)
    assert summary.ingested == len(AFTER)

    table = DeltaTable(str(lake / "tables" / "instances"))
    fields = {f.name: f for f in table.schema().fields}
    assert set(ADDED) <= set(fields) and all(fields[c].nullable for c in ADDED)
    rows = with_paths(table.to_pyarrow_table().to_pylist(), keyring, landing_files(landing))
    assert len(rows) == len(BEFORE) + len(AFTER)
    for row in rows:
        name = Path(row["source_path"]).name
        if name in BEFORE:
            assert all(row[c] is None for c in ADDED), name
            continue
        ds = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
        for column, kind in ADDED.items():
            value = ds.get(column)
            expected = kind(value) if value not in (None, "") else None
            if column == "ContrastBolusAgent":
                expected = None  # emptied by de-identification (PS3.15 E.1-1: Z/D)
            assert row[column] == expected, (name, column)

    # Spark sees the evolved schema too: KVP is a double, null but for the CT.
    df = spark.read.format("delta").load(str(lake / "tables" / "instances"))
    assert dict(df.dtypes)["KVP"] == "double" and dict(df.dtypes)["ExposureTime"] == "int"
    kvp = {r["Modality"]: r["KVP"] for r in df.where("KVP is not null").collect()}
    assert kvp == {"CT": 120.0}
