"""One row per data element, nested sequence items and private tags included."""

from __future__ import annotations

import functools

import pyarrow as pa
from pydicom.datadict import dictionary_has_tag, dictionary_keyword
from pydicom.dataset import Dataset

from dicomlake.dicom.values import (
    BINARY_VRS,
    PIXEL_TAGS,
    elements,
    reads_as_number,
    significant,
    values_of,
)

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
    columns = [rows[field.name] for field in ELEMENT_SCHEMA]
    tags, keywords, vrs, paths, depths, creators, texts, numbers, counts = columns
    for elem in elements(dataset):
        if depth == 0 and elem.tag in PIXEL_TAGS:
            continue
        tag = f"{elem.tag:08X}"
        path = f"{parent}.{tag}" if parent else tag
        vr, value = elem.VR, elem.value
        tags.append(tag)
        keywords.append(_keyword(elem.tag))
        vrs.append(vr)
        paths.append(path)
        depths.append(depth)
        creators.append(_private_creator(dataset, elem.tag))
        if vr == "SQ":
            texts.append(None)
            numbers.append(None)
            counts.append(len(value))
            for index, item in enumerate(value):
                _add_rows(item, f"{path}[{index}]", depth + 1, rows)
            continue
        text, number, count = element_text(vr, value)
        texts.append(text)
        numbers.append(number)
        counts.append(count)


def element_text(vr: str, value: object) -> tuple[str | None, float | None, int]:
    """A value's text, number and count as its element row holds them (not a sequence's)."""
    if vr in BINARY_VRS or isinstance(value, bytes):
        data = value or b""
        return (data.hex() if 0 < len(data) <= SHORT_BINARY else None), None, int(bool(data))
    values = significant(vr, values_of(value))
    # An AT value's str is dcmdump's "(7fe0,0010)" in upper case, as PS3.6 writes tags
    return ("\\".join(str(v) for v in values) if values else None), _number(vr, values), len(values)


@functools.cache
def _keyword(tag: int) -> str | None:
    return dictionary_keyword(tag) if dictionary_has_tag(tag) else None


def _private_creator(dataset: Dataset, tag: int) -> str | None:
    group, element = tag >> 16, tag & 0xFFFF
    if not group % 2 or element < 0x1000:
        return None
    # Read by `elements` before the elements of its block; one it could not read is UN bytes
    creator = dataset.get((group << 16) | (element >> 8))
    if creator is None or isinstance(creator.value, bytes):
        return None
    return str(significant(creator.VR, [str(creator.value)])[0])


def _number(vr: str, values: list[object]) -> float | None:
    if vr not in _NUMERIC_VRS or not values:
        return None
    if not reads_as_number(vr, str(values[0])):
        return None  # text such as "1e2" for an IS, which the JSON keeps as text too
    try:
        return float(values[0])  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
