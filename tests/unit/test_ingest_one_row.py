"""A stored file's instance and identities rows are checked as it is stored, so a value that
does not fit its column fails that file alone: the worker's check must fail a row exactly
where `pa.RecordBatch.from_pylist` fails it, with the same error, and pass every other."""

from __future__ import annotations

import datetime
import functools
import random
from typing import Any

import pyarrow as pa
import pytest

from dicomlake.ingest.worker import (
    _INSTANCE_FILE_SCHEMA,
    _check_identities,
    _check_instance,
)
from dicomlake.lake import schemas

_ODD: list[Any] = [
    None,
    "",
    "1.2.3",
    "x" * 300,
    "é",
    "\udc80 lone surrogate",
    "é \ud800",
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**53 + 1,
    1.5,
    1e300,
    float("nan"),
    True,
    b"bytes",
    [1.0, 2.0],
    [1.0, None],
    [1, 2.0],
    (1.0, 2.0),
    ["a"],
    [],
    {"k": 1},
    datetime.date(2020, 2, 29),
    datetime.datetime(2020, 2, 29, 1, 2, 3, tzinfo=datetime.timezone.utc),
    datetime.datetime(2020, 2, 29, 1, 2, 3),
    datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime.datetime(1, 1, 1),
    object(),
]


def _outcome(convert: Any, *args: Any) -> type[Exception] | None:
    try:
        convert(*args)
    except Exception as exc:  # the kind of failure must be the same
        return type(exc)
    return None


def _rows(schema: pa.Schema, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = [{}, {"not_a_column": 1}]
    for _ in range(300):
        fields = rnd.sample(list(schema), rnd.randint(1, 6))
        rows.append({f.name: rnd.choice(_ODD) for f in fields})
    return rows


@pytest.mark.parametrize(
    ("schema", "check"),
    [(_INSTANCE_FILE_SCHEMA, _check_instance), (schemas.IDENTITIES, _check_identities)],
    ids=["instances", "identities"],
)
def test_a_row_fails_where_from_pylist_fails(schema: pa.Schema, check: Any) -> None:
    failures = 0
    for row in _rows(schema, seed=len(schema)):
        expected = _outcome(functools.partial(pa.RecordBatch.from_pylist, schema=schema), [row])
        assert _outcome(check, row) == expected, row
        failures += expected is not None
    assert failures > 50  # the odd values do reach the error paths
