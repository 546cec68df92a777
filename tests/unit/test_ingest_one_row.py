"""A stored file's instance and identities rows are converted to Arrow as it is stored, so a
value that does not fit its column fails that file alone: the worker's one-pass conversion
must give what `pa.RecordBatch.from_pylist` gives, value for value and error for error."""

from __future__ import annotations

import datetime
import functools
import random
from typing import Any

import pyarrow as pa
import pytest

from dicomlake.ingest.worker import (
    _IDENTITIES_STRUCT,
    _INSTANCE_FILE_SCHEMA,
    _INSTANCE_STRUCT,
    _one_row,
)
from dicomlake.lake import schemas

_ODD: list[Any] = [
    None,
    "",
    "1.2.3",
    "x" * 300,
    "é",
    0,
    -1,
    2**31,
    2**63,
    1.5,
    float("nan"),
    True,
    b"bytes",
    [1.0, 2.0],
    ["a"],
    [],
    {"k": 1},
    datetime.date(2020, 2, 29),
    datetime.datetime(2020, 2, 29, 1, 2, 3, tzinfo=datetime.timezone.utc),
    datetime.datetime(2020, 2, 29, 1, 2, 3),
    object(),
]


def _outcome(convert: Any, *args: Any) -> Any:
    try:
        return convert(*args).to_pylist()
    except Exception as exc:  # the kind of failure must be the same
        return type(exc)


def _rows(schema: pa.Schema, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = [{}, {"not_a_column": 1}]
    for _ in range(300):
        fields = rnd.sample(list(schema), rnd.randint(1, 6))
        rows.append({f.name: rnd.choice(_ODD) for f in fields})
    return rows


@pytest.mark.parametrize(
    ("schema", "struct"),
    [(_INSTANCE_FILE_SCHEMA, _INSTANCE_STRUCT), (schemas.IDENTITIES, _IDENTITIES_STRUCT)],
    ids=["instances", "identities"],
)
def test_one_row_converts_as_from_pylist(schema: pa.Schema, struct: pa.StructType) -> None:
    failures = 0
    for row in _rows(schema, seed=len(schema)):
        expected = _outcome(functools.partial(pa.RecordBatch.from_pylist, schema=schema), [row])
        got = _outcome(_one_row, row, struct)
        assert got == expected, row
        failures += isinstance(expected, type)
    assert failures > 50  # the odd values do reach the error paths
