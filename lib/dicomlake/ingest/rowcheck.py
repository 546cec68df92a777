"""Whether a row fits its table's columns, told while its file is stored.

A stored file's instance and identities rows are checked as the file is stored, so that a value
that does not fit its column fails that file alone, not the task's write of its table fragments.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import pyarrow as pa


def _sure(type_: pa.DataType) -> Callable[[Any], bool]:
    """A test of a value that passes only values `pa.array` surely converts to ``type_``
    (text that encodes as UTF-8, an int in range, ...); it may fail values that convert."""
    if pa.types.is_string(type_):
        return lambda v: type(v) is str and (v.isascii() or _encodes(v))
    if pa.types.is_integer(type_):
        bits = type_.bit_width - pa.types.is_signed_integer(type_)
        low = -(1 << bits) if pa.types.is_signed_integer(type_) else 0
        return lambda v: type(v) is int and low <= v < 1 << bits
    if pa.types.is_float64(type_):
        return lambda v: type(v) is float
    if pa.types.is_boolean(type_):
        return lambda v: type(v) is bool
    if pa.types.is_date(type_):
        return lambda v: type(v) is date
    if pa.types.is_timestamp(type_) and type_.unit != "ns":  # ns overflows past 2262
        return lambda v: type(v) is datetime
    if pa.types.is_list(type_):
        item = _sure(type_.value_type)
        return lambda v: type(v) is list and all(x is None or item(x) for x in v)
    return lambda v: False


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


class RowCheck:
    """Fails a row as `pa.RecordBatch.from_pylist` with ``schema`` fails it (same errors), so
    a value that does not fit its column fails its file alone, while it is stored.

    A row whose every value is of a kind its column surely takes (`_sure`: 6 us a row of
    the instances' 54 columns) is not converted; any other is converted in one pass, as
    from_pylist converts it (55 us; from_pylist itself takes 0.54 ms, column by column).
    """

    def __init__(self, schema: pa.Schema) -> None:
        self._struct = pa.struct(schema)
        self._sure = tuple((f.name, _sure(f.type)) for f in schema)

    def __call__(self, row: dict[str, Any]) -> None:
        for name, sure in self._sure:
            value = row.get(name)
            if value is not None and not sure(value):
                pa.array([row], type=self._struct)
                return
