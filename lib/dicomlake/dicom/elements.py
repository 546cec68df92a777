"""One row per data element, nested sequence items and private tags included."""

from __future__ import annotations

import pyarrow as pa
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomlake.dicom.values import BINARY_VRS, PIXEL_TAGS, elements

ELEMENT_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("tag", pa.string(), nullable=False),
        pa.field("keyword", pa.string()),
        pa.field("vr", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("depth", pa.int16(), nullable=False),
        pa.field("private_creator", pa.string()),
        pa.field("value_text", pa.string()),
        pa.field("value_number", pa.float64()),
        pa.field("value_count", pa.int32(), nullable=False),
    ]
)
SHORT_BINARY = 64  # binary values up to this many bytes are kept as hex text
_NUMERIC_VRS = frozenset(["DS", "IS", "FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"])


def element_rows(dataset: Dataset) -> dict[str, list]:
    """Return one row per data element, column-oriented, for `ELEMENT_SCHEMA`.

    Top-level pixel data is left out. A sequence has a row of its own (no text,
    ``value_count`` = number of items), followed by its items' elements, whose ``path``
    reads like ``00081115[0].0008114A[2].00081155``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName = "Doe^Jane"
    >>> pa.Table.from_pydict(element_rows(ds), schema=ELEMENT_SCHEMA)["value_text"][0]
    <pyarrow.StringScalar: 'Doe^Jane'>
    """
    rows: dict[str, list] = {field.name: [] for field in ELEMENT_SCHEMA}
    _add_rows(dataset, "", 0, rows)
    return rows


def _add_rows(dataset: Dataset, parent: str, depth: int, rows: dict[str, list]) -> None:
    for elem in elements(dataset):
        if depth == 0 and elem.tag in PIXEL_TAGS:
            continue
        tag = f"{elem.tag:08X}"
        path = f"{parent}.{tag}" if parent else tag
        vr, value = elem.VR, elem.value
        is_sequence = vr == "SQ"
        rows["tag"].append(tag)
        rows["keyword"].append(elem.keyword or None)
        rows["vr"].append(vr)
        rows["path"].append(path)
        rows["depth"].append(depth)
        rows["private_creator"].append(_private_creator(dataset, elem.tag))
        rows["value_text"].append(None if is_sequence else _text(vr, value))
        rows["value_number"].append(_number(vr, value))
        rows["value_count"].append(len(value) if is_sequence else elem.VM)
        if is_sequence:
            for index, item in enumerate(value):
                _add_rows(item, f"{path}[{index}]", depth + 1, rows)


def _private_creator(dataset: Dataset, tag: int) -> str | None:
    group, element = tag >> 16, tag & 0xFFFF
    if not group % 2 or element < 0x1000:
        return None
    creator = dataset.get((group << 16) | (element >> 8))
    return None if creator is None else str(creator.value)


def _values(value: object) -> list[object]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def _text(vr: str, value: object) -> str | None:
    if vr in BINARY_VRS or isinstance(value, bytes):
        data = value or b""
        return data.hex() if 0 < len(data) <= SHORT_BINARY else None  # type: ignore[arg-type]
    values = _values(value)
    return "\\".join(str(v) for v in values) if values else None


def _number(vr: str, value: object) -> float | None:
    if vr not in _NUMERIC_VRS:
        return None
    values = _values(value)
    if not values:
        return None
    try:
        return float(values[0])  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
