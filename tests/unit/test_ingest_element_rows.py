"""The worker gathers element rows column-wise: the same table whatever the batch size."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydicom.dataset import Dataset

from dicomlake.dicom.elements import ELEMENT_SCHEMA, element_rows
from dicomlake.ingest.worker import _ElementRows
from dicomlake.lake import schemas


def _instance(n: int) -> dict[str, list]:
    ds = Dataset()
    ds.PatientName = f"Doe^{n}"
    ds.Rows = n
    ds.SOPInstanceUID = f"1.2.3.{n}"
    return element_rows(ds)


def _expected(count: int) -> pa.Table:
    tables = []
    for n in range(count):
        rows = _instance(n)
        k = len(rows["tag"])
        rows.update(instance_id=[f"i{n}"] * k, SOPInstanceUID=[f"s{n}"] * k)
        rows["ingest_run_id"] = ["run"] * k
        tables.append(pa.Table.from_pydict(rows, schema=schemas.ELEMENTS))
    return pa.concat_tables(tables)


@pytest.mark.parametrize("batch", [1, 2, 4, 65536])
def test_one_table_in_order(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    monkeypatch.setattr(_ElementRows, "BATCH_ROWS", batch)
    gathered = _ElementRows("run")
    assert gathered.table() is None
    for n in range(5):
        rows = pa.RecordBatch.from_pydict(_instance(n), schema=ELEMENT_SCHEMA)
        gathered.add(rows, f"i{n}", f"s{n}")
    table = gathered.table()
    assert table is not None and table.schema == schemas.ELEMENTS
    assert table.to_pylist() == _expected(5).to_pylist()


def test_instances_without_rows_or_sop_uid_are_named_right() -> None:
    gathered = _ElementRows("run")
    empty = pa.RecordBatch.from_pylist([], schema=ELEMENT_SCHEMA)
    gathered.add(empty, "i0", "s0")
    gathered.add(pa.RecordBatch.from_pydict(_instance(1), schema=ELEMENT_SCHEMA), "i1", None)
    gathered.add(empty, "i2", None)
    gathered.add(pa.RecordBatch.from_pydict(_instance(3), schema=ELEMENT_SCHEMA), "i3", "s3")
    table = gathered.table()
    assert table is not None
    names = list(
        zip(table["instance_id"].to_pylist(), table["SOPInstanceUID"].to_pylist(), strict=True)
    )
    k1, k3 = len(_instance(1)["tag"]), len(_instance(3)["tag"])
    assert names == [("i1", None)] * k1 + [("i3", "s3")] * k3
