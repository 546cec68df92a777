"""One header's records: DICOM JSON, element rows, promoted values and identities (pure).

`header_records` is the one place that decides how they are made. The compiled core
(`dicomlake_native`, built from ``native/``) reads the header's bytes once and writes the
JSON, the element rows and the de-identification of every element in that pass; it also
gives the top-level rows (`promote.top_level`), the original text of the identity elements
with the date shift it takes from them, and the file meta cleaned as `deid.clean_meta` cleans
it. `deid.deidentify`'s other phases run around it: `deid.marks` (age and marks) before,
`deid.start` (given those texts) after. The promoted columns and the identities' pseudonyms
are read from the top-level element rows on both paths. Whatever the core does not read
exactly as pydicom does (another character set, a deflated file, UN values, a value it cannot
convert the same way, anything malformed) it declines, and the reference path runs:
`deid.deidentify`, `dicomjson.header_json` and `elements.element_rows` over the whole pydicom
dataset. Both give the same records; the tests hold them to that.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomlake.config import DeidConfig
from dicomlake.dicom import deid
from dicomlake.dicom.dicomjson import header_json
from dicomlake.dicom.elements import ELEMENT_SCHEMA, element_rows
from dicomlake.dicom.native import core, dicomlake_native
from dicomlake.dicom.original import Original
from dicomlake.dicom.promote import Text, instance_uid, promoted_values, top_level
from dicomlake.dicom.split import SplitInstance
from dicomlake.dicom.values import BINARY_VRS, TEXT_VRS, named_instance, values_of

FAST, REFERENCE = "fast", "reference"
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class HeaderRecords:
    """What the tables keep of one header (de-identified when de-identification is on)."""

    values: dict[str, Any]  # `promoted_values`
    header_json: str
    elements: pa.RecordBatch  # `ELEMENT_SCHEMA`
    identities: dict[str, Any] | None  # `deidentify`'s, None when de-identification is off
    path: str  # FAST or REFERENCE


def warm_up() -> None:
    """What a process pays once before its first header: pyarrow's first conversion of a list
    (it imports pandas then, 0.2-0.3 s, unless the worker daemon hid it), and the compiled
    core's tables (25 ms)."""
    pa.array([0])
    core()


def header_records(
    split: SplitInstance, secret: bytes, options: DeidConfig | None
) -> HeaderRecords:
    """The records of one header, by the compiled core, or by pydicom where it declines.

    ``options`` None means no de-identification (``secret`` is then unused).
    """
    if _fast_possible(split):
        try:
            return _fast(split, secret, options)
        except dicomlake_native.Declined:
            pass
    return _reference(split, secret, options)


def _fast_possible(split: SplitInstance) -> bool:
    implicit, little = split.original.encoding
    return (
        dicomlake_native is not None
        and split.transfer_syntax_uid != DeflatedExplicitVRLittleEndian
        and implicit is not None
        and little is not None
    )


def _reference(split: SplitInstance, secret: bytes, options: DeidConfig | None) -> HeaderRecords:
    if options is None:
        clean, identities, with_clean = split.dataset, None, split
    else:
        clean, identities = deid.deidentify(split.dataset, secret, options)
        with_clean = dataclasses.replace(split, original=Original.of(clean))
    rows = pa.RecordBatch.from_pydict(element_rows(clean), schema=ELEMENT_SCHEMA)
    values = promoted_values(with_clean, top_level(rows))
    return HeaderRecords(values, header_json(clean), rows, identities, REFERENCE)


def _fast(split: SplitInstance, secret: bytes, options: DeidConfig | None) -> HeaderRecords:
    original = split.original
    implicit, little = (bool(flag) for flag in original.encoding)
    if options is None:
        text, buffers, n, _, _, tags, top, *_ = core().read(
            split.prefix, split.suffix, implicit, little
        )
        _check_top(original, tags)
        return HeaderRecords(promoted_values(split, top), text, _batch(buffers, n), None, FAST)
    text, buffers, n, counts, uids, tags, top, found, shift, meta_tags, meta_uid = core().read(
        split.prefix, split.suffix, implicit, little, _plan(original, secret, options)
    )
    _check_top(original, tags)
    if original.meta_tags() != meta_tags:
        raise dicomlake_native.Declined("file meta elements differ from pydicom's")
    ctx = deid.start(original, secret, options, _originals(original, found))
    if ctx.shift != shift:
        raise dicomlake_native.Declined("the core's date shift is not deid.start's")
    for key, count in zip(deid.COUNTS, counts, strict=True):  # the file meta's and dataset's
        ctx.counts[key] += count
    ctx.uids.update(uids)
    rows = _batch(buffers, n)
    media = functools.partial(deid.kept_text, meta_uid)  # the clean file meta's
    pseudonyms = {kw: _stripped(top.get(kw)) for kw in deid.PSEUDONYM_KEYWORDS}
    identities = deid.identities(ctx, pseudonyms, instance_uid(top, media))
    values = promoted_values(split, top, media)
    return HeaderRecords(values, text, rows, identities, FAST)


def _plan(original: Original, secret: bytes, options: DeidConfig) -> tuple[Any, ...]:
    """`Core.read`'s de-identification plan for the header ``original``."""
    marked = _quietly(deid.marks, original, options)
    return (
        secret,
        options.max_shift_days if options.dates == "shift" else 0,
        options.keep_patient_characteristics,
        options.keep_descriptors,
        options.safe_private,
        _core_marks(tuple(marked)),
    )


def _check_top(original: Original, top: list[int]) -> None:
    """The core must have read the very elements pydicom did (none after the pixel data)."""
    if original.tags() != top:
        raise dicomlake_native.Declined("top-level elements differ from pydicom's")


def _originals(
    original: Original, found: dict[str, tuple[str, str | None]]
) -> dict[str, str | None]:
    """`deid.start`'s originals from the core's rows of the identity elements; pydicom's
    text (`deid.original`) where one holds bytes or items, which no row's text is. The
    SOPInstanceUID is `Original.sop_instance_uid`'s: a single text value's ``str``, which
    names it, is its row's text but for padding; pydicom reads any other (0.01 ms)."""
    out = {}
    for keyword in deid.IDENTITY_KEYWORDS:
        vr, text = found.get(keyword, ("", None))
        if vr == "SQ" or vr in BINARY_VRS:
            out[keyword] = _quietly(deid.original, original, keyword, vr)
        else:
            out[keyword] = deid.kept_text(text)
    vr, text = found.get("SOPInstanceUID", ("", None))
    if vr in TEXT_VRS and "\\" not in (text or ""):
        media = functools.partial(original.get, "MediaStorageSOPInstanceUID", meta=True)
        out["SOPInstanceUID"] = named_instance(out["SOPInstanceUID"], media)[0]
    else:
        out["SOPInstanceUID"] = _quietly(original.sop_instance_uid)[0]
    return out


def _quietly(read: Callable[..., _T], *args: Any) -> _T:
    """``read(*args)``, a read that may build the pydicom dataset (`Original.dataset`), whose
    odd values warn as it converts them (`Original.get` reads the rest quietly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read(*args)


def _stripped(element: Text | None) -> str | None:
    """An element's text as `deid.identities` keeps it."""
    return deid.kept_text(element[1] if element else None)


def _text_values(value: object) -> list[str]:
    return [str(v) for v in values_of(value)]


@functools.lru_cache(maxsize=1024)
def _core_marks(marked: tuple[tuple[str, Any], ...]) -> Any:
    """`deid.marks` for the core to set the same elements, with the data dictionary's VR (it
    declines where the header holds one of them with another VR), as the core's `Marks`.
    Made once per options and PatientAge: the core converts them once, and only reads them."""
    out = []
    for keyword, value in marked:
        tag, vr = _dictionary(keyword)
        if isinstance(value, tuple):  # `deid.Code` items
            items = [
                [(t, vr, list(_set_values(vr, text))) for t, vr, text in code] for code in value
            ]
            out.append((tag, "SQ", [], items))
        elif texts := _set_values(vr, value):
            out.append((tag, vr, list(texts), []))
    return dicomlake_native.Marks(out)


@functools.cache
def _dictionary(keyword: str) -> tuple[int, str]:
    """A keyword's tag and the data dictionary's VR."""
    tag = tag_for_keyword(keyword)
    return tag, dictionary_VR(tag)


@functools.lru_cache(maxsize=1024)
def _set_values(vr: str, value: str) -> tuple[str, ...]:
    """The values of an element of ``vr`` set to ``value``, as pydicom holds them (a text
    with backslashes is several values), each as text."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values warn as they are set
        return tuple(_text_values(DataElement(0, vr, value).value))


# Each element-row column's type and the slice of the core's buffers that make it
_WIDTHS = [3 if pa.types.is_string(field.type) else 2 for field in ELEMENT_SCHEMA]
_COLUMNS = tuple(
    (field.type, slice(end - width, end))
    for field, width, end in zip(
        ELEMENT_SCHEMA, _WIDTHS, itertools.accumulate(_WIDTHS), strict=True
    )
)


def _batch(buffers: list[bytes | None], n: int) -> pa.RecordBatch:
    """The core's element-row buffers as a record batch (validity, then offsets and data or
    values, per column)."""
    parts = [None if b is None else pa.py_buffer(b) for b in buffers]
    arrays = [pa.Array.from_buffers(type_, n, parts[at]) for type_, at in _COLUMNS]
    return pa.RecordBatch.from_arrays(arrays, schema=ELEMENT_SCHEMA)
