"""One header's records: DICOM JSON, element rows, promoted values and identities (pure).

`header_records` is the one place that decides how they are made. The compiled core
(`dicomlake_native`, built from ``native/``) reads the header's bytes once and writes the
JSON, the element rows and the de-identification of every element in that pass; Python then
de-identifies only the few top-level elements that the promoted columns and the identities
record need, with `deid.deidentify` itself, so those keep their exact semantics. Whatever the
core does not read exactly as pydicom does (another character set, a deflated file, UN
values, a value it cannot convert the same way, anything malformed) it declines, and the
reference path runs: `deid.deidentify`, `dicomjson.header_json` and `elements.element_rows`
over the whole pydicom dataset. Both give the same records; the tests hold them to that.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pyarrow as pa
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomlake.config import DeidConfig
from dicomlake.dicom.deid import COUNTS, IDENTITY_KEYWORDS, deidentify
from dicomlake.dicom.dicomjson import header_json
from dicomlake.dicom.elements import ELEMENT_SCHEMA, element_rows
from dicomlake.dicom.native import core, dicomlake_native
from dicomlake.dicom.promote import PROMOTED, promoted_values
from dicomlake.dicom.split import SplitInstance
from dicomlake.dicom.values import values_of

FAST, REFERENCE = "fast", "reference"

# The top-level elements `deidentify` sets after cleaning (`deid._set_age`, `deid._mark`)
_MARKED = tuple(
    tag_for_keyword(kw)
    for kw in (
        "PatientAge",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
        "LongitudinalTemporalInformationModified",
    )
)
# What the promoted columns, the identities record and the marks read: top-level elements
_TOP_KEYWORDS = (
    *IDENTITY_KEYWORDS,
    *PROMOTED.names,
    "SpecificCharacterSet",
    "PatientBirthTime",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
)
_TOP_TAGS = frozenset(
    tag for tag in (*map(tag_for_keyword, _TOP_KEYWORDS), *_MARKED) if tag is not None
)


@dataclasses.dataclass(frozen=True)
class HeaderRecords:
    """What the tables keep of one header (de-identified when de-identification is on)."""

    values: dict[str, Any]  # `promoted_values`
    header_json: str
    elements: pa.RecordBatch  # `ELEMENT_SCHEMA`
    identities: dict[str, Any] | None  # `deidentify`'s, None when de-identification is off
    path: str  # FAST or REFERENCE


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
    implicit, little = getattr(split.dataset, "original_encoding", (None, None))
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
        clean, identities = deidentify(split.dataset, secret, options)
        with_clean = dataclasses.replace(split, dataset=clean)
    rows = pa.RecordBatch.from_pydict(element_rows(clean), schema=ELEMENT_SCHEMA)
    return HeaderRecords(
        promoted_values(with_clean), header_json(clean), rows, identities, REFERENCE
    )


def _fast(split: SplitInstance, secret: bytes, options: DeidConfig | None) -> HeaderRecords:
    dataset = split.dataset
    implicit, little = (bool(flag) for flag in dataset.original_encoding)
    if options is None:
        text, buffers, n, _, _, top = core().read(split.prefix, split.suffix, implicit, little)
        _check_top(dataset, top)
        return HeaderRecords(promoted_values(split), text, _batch(buffers, n), None, FAST)
    clean, identities = deidentify(_top_level(dataset), secret, options)
    plan = (
        secret,
        identities["date_shift_days"],
        options.keep_patient_characteristics,
        options.keep_descriptors,
        options.safe_private,
        _marks(clean),
    )
    text, buffers, n, counts, uids, top = core().read(
        split.prefix, split.suffix, implicit, little, plan
    )
    _check_top(dataset, top)
    # The file meta's removals and UIDs (cleaned in Python), with the dataset's
    deid_counts = identities["deid_counts"]
    identities["deid_counts"] = {k: deid_counts[k] + c for k, c in zip(COUNTS, counts, strict=True)}
    originals = {**json.loads(identities["original_uids"]), **dict(uids)}
    identities["original_uids"] = json.dumps(originals, sort_keys=True)
    values = promoted_values(dataclasses.replace(split, dataset=clean))
    return HeaderRecords(values, text, _batch(buffers, n), identities, FAST)


def _check_top(dataset: Dataset, top: list[int]) -> None:
    """The core must have read the very elements pydicom did (none after the pixel data)."""
    if sorted(dataset.keys()) != top:
        raise dicomlake_native.Declined("top-level elements differ from pydicom's")


def _top_level(dataset: Dataset) -> Dataset:
    """The top-level elements `deidentify` needs for the identities and promoted values, as
    they were read (raw), with the file meta."""
    top = Dataset()
    for tag in _TOP_TAGS:
        elem = dataset.get_item(tag, keep_deferred=True)
        if elem is not None:
            top[tag] = elem
    top.file_meta = dataset.file_meta
    return top


def _text_values(value: object) -> list[str]:
    return [str(v) for v in values_of(value)]


def _marks(clean: Dataset) -> list[tuple[int, str, list[str], list[list[tuple]]]]:
    """The elements `deidentify` set on the clean header, for the core to set the same."""
    marks = []
    for tag in _MARKED:
        elem = clean.get(tag)
        if elem is None:
            continue
        if elem.VR == "SQ":
            items = [
                [(int(t), e.VR, _text_values(e.value)) for t, e in item.items()]
                for item in elem.value
            ]
            marks.append((tag, "SQ", [], items))
        elif values_of(elem.value):
            marks.append((tag, elem.VR, _text_values(elem.value), []))
    return marks


def _batch(buffers: list[bytes | None], n: int) -> pa.RecordBatch:
    """The core's element-row buffers as a record batch (validity, then offsets and data or
    values, per column)."""
    arrays, i = [], 0
    for field in ELEMENT_SCHEMA:
        width = 3 if pa.types.is_string(field.type) else 2
        parts = [None if b is None else pa.py_buffer(b) for b in buffers[i : i + width]]
        arrays.append(pa.Array.from_buffers(field.type, n, parts))
        i += width
    return pa.RecordBatch.from_arrays(arrays, schema=ELEMENT_SCHEMA)
