"""De-identification of one header: PS3.15 Annex E with keyed, stable pseudonyms (pure).

`deidentify` builds a clean copy of a pydicom header with the attributes of the Basic
Application Level Confidentiality Profile (Table E.1-1, in `deid_table`, and the attributes it
does not list that hold a patient's dates, an identifier or free text, `SUPPLEMENT` and
`REPEATING_PROFILE`) removed or replaced,
and returns it with the identified values it took out, for the restricted identities table.
The copy is built from what it keeps: unchanged elements are shared with the input, changed
ones are copies, and every sequence item is a new dataset, so the input is never changed.
It runs in phases that the compiled header path (`dicomlake.dicom.header`) runs around its
own cleaning of the elements: `start` (identified values, date shift), `clean_meta`, `marks`
(age and marks, from the original header), `identities`.

What analysts keep, and how (the profile's options in brackets)
---------------------------------------------------------------
- Join keys become keyed pseudonyms (HMAC-SHA256 with a 32-byte secret, in practice
  ``Keyring.secret_for("pseudonym")``), the same in every run and every lake with that secret:

  * every UID that identifies an instance, series, study, frame of reference, ... (action U, and
    any other UI value that is neither a well-known DICOM UID nor a class/syntax UID), at any
    depth, file meta included: `uid_pseudonym`;
  * PatientID and AccessionNumber: `text_pseudonym`.
- Dates: kept as they are (``dates="keep"``, Retain Longitudinal Temporal Information with Full
  Dates Option) or moved back by a per-patient number of days (``dates="shift"``, ... Modified
  Dates Option): `date_shift_days`. Times of day are kept. Birth date and time are removed;
  PatientAge is computed from birth date and study date when the header lacks it, and ages of
  ``age_cap_years`` or more are written as that cap (HIPAA Safe Harbor groups 90+).
- PatientSex, PatientAge, PatientSize, PatientWeight, PatientSexNeutered, PregnancyStatus are
  kept (``keep_patient_characteristics``, Retain Patient Characteristics Option).
- Study/Series description and protocol name are removed unless ``keep_descriptors`` (the
  operator then accepts that free text may name someone; the Clean Descriptors Option would
  clean them, which is not done here).
- Private attributes are removed, except the few numeric ones in `SAFE_PRIVATE` (from PS3.15
  Table E.3.10-1) when ``safe_private`` (Retain Safe Private Option), and then only when they
  hold numbers of the VR listed there: a text value in a safe-listed element is removed.
- What the rules cannot classify is removed: a standard (even group) attribute that neither
  pydicom's data dictionary nor Table E.1-1 knows, with everything in it if it is a sequence.

The rules applied to each element, first match wins
---------------------------------------------------
1. group length (gggg,0000): removed; private (but a creator): rule above, readable or not;
   unreadable value, unknown standard attribute: removed; an attribute written with a VR of
   another kind than its data dictionary VR (kinds: a name PN; free text LT/ST/UT; an
   address UR; a UID UI; items SQ; dates DA/DT), such as a name written as LO, a UID as LO,
   free text as OB or a sequence as bytes, which would escape the rule of its kind: removed.
2. option overrides (patient characteristics, descriptors): kept.
3. PatientID, AccessionNumber: `text_pseudonym` (removed where their VR holds no text: a
   pseudonym cannot take the value's place; so for action U below).
4. VR DA/DT (not birth dates): kept or shifted; TM: kept; PatientBirthDate/Time: removed.
5. VR UI: table action X/Z removes or empties; otherwise pseudonymised unless well known.
6. VR SQ: X, X/Z, X/D, X/Z/D and D (but ContentSequence) removed; Z emptied; others (U,
   X/Z/U*, ContentSequence, not listed) kept with every item cleaned by these same rules.
7. VR PN: emptied where the table says Z (PatientName), removed otherwise (listed or not).
8. Table action X, X/Z, X/D, X/Z/D: removed; Z, Z/D, D: emptied (the analyst tables need no
   dummy value, and files are never rebuilt from them); U: pseudonymised as a UID.
9. VR LT, ST, UT, UR not listed: removed (free text and addresses not known to be safe; a URL
   may hold a patient ID or a study's original UID), but CodingSchemeURL and URNCodeValue
   (codes); VR UN (a value not read as its attribute's VR): removed; everything else kept.
10. Text kept by the rules above that holds a control character no text VR allows (below
   0x20, but TAB, LF, FF and CR), a value of DS, IS, UI, AS, DA, TM or DT not of its VR's
   form (PS3.5 Table 6.2-1; DA and TM in ACR-NEMA's too; a shifted DT's time and offset
   included), an element kept as read that holds more values than its
   attribute's VM allows, and binary data kept as read (bytes, or numbers of any VM; a
   safe-listed private attribute's too) that ends in whole data elements tagged after its own
   (`walk.ends_in_elements`, in the file meta as it is written or as the dataset after it
   is; bytes crafted to take too long to rule out count too): removed.
   Such a value is what a bad length leaves, a code string, numbers or bytes that swallowed
   the elements after them (a patient's name and IDs among them).

Each removal of an unknown attribute, a private attribute, a safe-listed private attribute
holding text and an invalid value (rule 1's of a VR of another kind, and rule 10's) is
counted (``identities["deid_counts"]``). Then PatientIdentityRemoved=YES,
DeidentificationMethod, its code sequence (CID 7050) and
LongitudinalTemporalInformationModified are set.

Pseudonym algorithms (version 1; reimplement with any HMAC-SHA256)
------------------------------------------------------------------
``secret`` is 32 bytes; values are stripped of surrounding spaces and NULs, UTF-8 encoded.

- UID: ``d = HMAC-SHA256(secret, b"dicomlake-uid-v1\\x00" + uid)[:16]``; set the UUID
  version 8 and variant bits (``d[6] = d[6] & 0x0F | 0x80``, ``d[8] = d[8] & 0x3F | 0x80``);
  the pseudonym is ``"2.25." + str(int.from_bytes(d, "big"))`` (PS3.5 B.2, at most 44 chars).
- PatientID, AccessionNumber: ``base32(HMAC-SHA256(secret, b"dicomlake-id-v1\\x00" + keyword +
  b"\\x00" + value))[:16]`` (upper case A-Z2-7, fits SH's 16 characters).
- Date shift: ``n = int.from_bytes(HMAC-SHA256(secret, b"dicomlake-dateshift-v1\\x00" +
  key)[:8], "big")``, dates move by ``-(1 + n % max_shift_days)`` days, where ``key`` is the
  original PatientID, or ``"study:" + StudyInstanceUID`` when the PatientID is empty.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import functools
import hashlib
import hmac
import io
import json
import re
import struct
import warnings
from typing import Any

from pydicom.datadict import dictionary_VM, dictionary_VR, get_entry
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID_dictionary

from dicomlake.config import DeidConfig
from dicomlake.dicom.deid_table import ACTIONS, REPEATING, SOURCE
from dicomlake.dicom.original import Original
from dicomlake.dicom.values import (
    BINARY_VRS,
    NUMBER_FORMATS,
    TEXT_VRS,
    converted_element,
    get,
    reads_as_number,
    significant,
    sop_instance_uid,
    value_at,
    values_of,
)
from dicomlake.dicom.walk import ends_in_elements

PSEUDONYM_PURPOSE = "pseudonym"  # Keyring.secret_for(PSEUDONYM_PURPOSE)
ALGORITHM = "dicomlake-deid-v1"
_UID_DOMAIN = b"dicomlake-uid-v1\x00"
_ID_DOMAIN = b"dicomlake-id-v1\x00"
_SHIFT_DOMAIN = b"dicomlake-dateshift-v1\x00"

# Tags by keyword, resolved once (pydicom's dictionary).
_T = {
    kw: int(Tag(kw))
    for kw in (
        "PatientID",
        "AccessionNumber",
        "PatientName",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientAge",
        "StudyInstanceUID",
        "ContentSequence",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
        "LongitudinalTemporalInformationModified",
    )
}
_PSEUDONYMISED_TEXT = {_T["PatientID"]: "PatientID", _T["AccessionNumber"]: "AccessionNumber"}
_BIRTH = frozenset({_T["PatientBirthDate"], _T["PatientBirthTime"]})
PATIENT_CHARACTERISTICS = frozenset(
    int(Tag(kw))
    for kw in (
        "PatientSex",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "PatientSexNeutered",
        "PregnancyStatus",
    )
)
DESCRIPTORS = frozenset(
    int(Tag(kw)) for kw in ("StudyDescription", "SeriesDescription", "ProtocolName")
)
# UI attributes that name a kind of thing (a SOP class, a syntax, a coding scheme), never a
# patient's object: kept as they are even when not in pydicom's dictionary (private classes).
_CLASS_UID_RE = re.compile(r"(ClassUID|TransferSyntaxUID|CodingSchemeUID)(InFile)?$")
# Retain Safe Private Option: (private creator, group, element byte) -> VR, from PS3.15 Table
# E.3.10-1 (diffusion b-values and directions), a small subset kept because they are numbers;
# an element is kept only with that VR. (SIEMENS MR HEADER DiffusionDirectionality, CS, is
# listed there too, but text is not kept.)
SAFE_PRIVATE: dict[tuple[str, int, int], str] = {
    ("SIEMENS MR HEADER", 0x0019, 0x0C): "IS",  # B_value
    ("SIEMENS MR HEADER", 0x0019, 0x0E): "FD",  # DiffusionGradientDirection
    ("SIEMENS MR HEADER", 0x0019, 0x27): "FD",  # B_matrix
    ("GEMS_PARM_01", 0x0043, 0x39): "IS",  # slop_int_6..9 (b-value)
}
# The counts of what the allow-list rules removed, as ``identities["deid_counts"]``
COUNTS = ("removed_unknown", "removed_private", "removed_private_text", "removed_invalid")
# A C0 control character that no text VR allows (PS3.5 6.1: LT, ST and UT take TAB, LF, FF
# and CR, the others none; escape sequences are gone once the text is decoded)
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f]")
# PS3.5 Table 6.2-1's forms of the VRs whose values have one (DS and IS: `reads_as_number`),
# each value without its padding; an empty value has every form. DA and TM also in the forms of
# ACR-NEMA (yyyy.mm.dd, hh:mm:ss) that old devices still write, AS without its leading zeros or
# unit; none has room for a name or an ID
_GRAMMARS = {
    "UI": re.compile(r"[0-9.]{0,64}"),
    "AS": re.compile(r"[0-9]{0,3}[DWMY]?"),  # 75Y and 75 as devices write them too
    "DA": re.compile(r"([0-9]{8}|[0-9]{4}\.[0-9]{2}\.[0-9]{2})?"),
    "TM": re.compile(r"([0-9]{2}(:?[0-9]{2}(:?[0-9]{2}(\.[0-9]{1,6})?)?)?)?"),
    "DT": re.compile(
        r"([0-9]{4}([0-9]{2}([0-9]{2}([0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?)?)?)?"
        r"([+-][0-9]{4})?)?"
    ),
}
_DROP_SEQUENCE = frozenset({"X", "X/Z", "X/D", "X/Z/D", "D"})
_REMOVE = frozenset({"X", "X/Z", "X/D", "X/Z/D"})
_EMPTY = frozenset({"Z", "Z/D", "D"})
# Free text and addresses (a URL may hold a patient's ID, or the original UIDs of a study)
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
# Addresses that name a code's scheme or value, never anyone: kept
_CODE_ADDRESSES = frozenset(int(Tag(kw)) for kw in ("CodingSchemeURL", "URNCodeValue"))
# What the rules read an attribute as, by its VR: a name, free text or an address, a UID,
# items, dates. A standard attribute written with a VR of another kind than its data
# dictionary VR's (a name as LO, a UID as LO, free text as OB, a sequence as bytes) would
# escape the rule its kind has: it is removed.
_KINDS = {
    "PN": "name",
    "LT": "text",
    "ST": "text",
    "UT": "text",
    "UR": "address",
    "UI": "uid",
    "SQ": "items",
    "DA": "date",
    "DT": "date",
}
# Attributes that Table E.1-1 (`SOURCE`) does not list and that hold a patient's dates or an
# identifier: removed, as the table's X removes
SUPPLEMENT = {
    0x00100033: "X",  # Patient's Birth Date in Alternative Calendar
    0x00100034: "X",  # Patient's Death Date in Alternative Calendar
    0x00100035: "X",  # Patient's Alternative Calendar (of those dates)
    0x00102295: "X",  # Breed Registration Number (an animal's identifier)
}
PROFILE = {**ACTIONS, **SUPPLEMENT}
"""The actions by tag: Table E.1-1 and `SUPPLEMENT`."""
# Overlays' free text, which Table E.1-1 does not list beside their comments
REPEATING_PROFILE = (
    *REPEATING,
    (0x60000022, 0xFF00FFFF, "X"),  # Overlay Description
    (0x60001500, 0xFF00FFFF, "X"),  # Overlay Label
)
"""The actions of repeating groups: (tag, mask, action), matching when tag & mask == tag."""
_NUMBER_VRS = frozenset({*NUMBER_FORMATS, "AT"})
# CID 7050 De-identification Method, coding scheme DCM
_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "safe_private": ("113111", "Retain Safe Private Option"),
}

# CodeValue, CodingSchemeDesignator, CodeMeaning: the elements of a code item
_CODE_TAGS = tuple(
    (BaseTag(tag), dictionary_VR(tag)) for tag in (0x00080100, 0x00080102, 0x00080104)
)

# The identified values the restricted table keeps (top level of the original header).
IDENTITY_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "OtherPatientIDs",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)
# The pseudonyms next to them, by the keyword whose clean value they are.
PSEUDONYM_KEYWORDS = (
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)
# `identities`' original_uids: json.dumps(sort_keys=True) builds this encoder on every call
_UIDS_JSON = json.JSONEncoder(sort_keys=True)


def options_json(options: DeidConfig) -> str:
    """The options, the profile table's source and the algorithm version, as JSON (per run)."""
    doc = dataclasses.asdict(options)
    doc.update(
        {
            "profile": SOURCE,
            "supplement": {f"{tag:08X}": action for tag, action in sorted(SUPPLEMENT.items())},
            "algorithm": ALGORITHM,
        }
    )
    return json.dumps(doc, sort_keys=True)


def _method(options: DeidConfig) -> str:
    """The DeidentificationMethod text (LO: at most 64 characters)."""
    dates = "shifted dates" if options.dates == "shift" else "full dates"
    return f"dicomlake v1 PS3.15 E.1-1 basic; {dates}"[:64]


def _norm(value: object) -> str:
    return str(value).strip(" \x00")


def _mac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def uid_pseudonym(secret: bytes, uid: str) -> str:
    """A valid UID (``2.25.<int>``) standing for ``uid``: keyed, stable, one-way."""
    d = bytearray(_mac(secret, _UID_DOMAIN + _norm(uid).encode("utf-8"))[:16])
    d[6] = (d[6] & 0x0F) | 0x80  # UUID version 8 (RFC 9562: custom)
    d[8] = (d[8] & 0x3F) | 0x80  # RFC 4122 variant
    return "2.25." + str(int.from_bytes(bytes(d), "big"))


def text_pseudonym(secret: bytes, keyword: str, value: str) -> str:
    """16 characters (A-Z, 2-7) standing for ``value`` of ``keyword`` (PatientID...)."""
    mac = _mac(secret, _ID_DOMAIN + keyword.encode() + b"\x00" + _norm(value).encode("utf-8"))
    return base64.b32encode(mac).decode("ascii")[:16]


def date_shift_days(secret: bytes, patient_key: str, max_shift_days: int) -> int:
    """The (negative) number of days every date of this patient moves by."""
    n = int.from_bytes(_mac(secret, _SHIFT_DOMAIN + patient_key.encode("utf-8"))[:8], "big")
    return -(1 + n % max_shift_days)


def is_class_uid(keyword: str) -> bool:
    """Whether a UI attribute names a class, syntax or coding scheme (kept as it is)."""
    return bool(_CLASS_UID_RE.search(keyword))


def is_well_known_uid(value: str) -> bool:
    """A UID defined by the standard (pydicom's UID dictionary): never a patient's."""
    return _norm(value) in UID_dictionary


def profile_action(tag: int) -> str | None:
    """The profile's action for ``tag`` (Table E.1-1 and the supplements), None when it does
    not list it."""
    action = PROFILE.get(tag)
    if action is not None:
        return action
    for listed, mask, repeating in REPEATING_PROFILE:
        if tag & mask == listed:
            return repeating
    return None


@dataclasses.dataclass
class Context:
    """One header's de-identification: what it needs before its elements are cleaned (the
    identified values, the date shift) and what cleaning them records."""

    secret: bytes
    options: DeidConfig
    originals: dict[str, str | None]  # `IDENTITY_KEYWORDS` -> text as read
    shift: int  # days; 0 when dates are kept
    implicit: bool = False  # the header's encoding, to read values kept as bytes
    little: bool = True
    # The encoding of the elements after these where it is another (the dataset after the file
    # meta): a value that swallowed some holds them in it
    after: tuple[bool, bool] | None = None
    uids: dict[str, str] = dataclasses.field(default_factory=dict)  # pseudonym -> original
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(COUNTS, 0))

    def uid(self, value: str) -> str:
        if not _norm(value):
            return ""
        out = uid_pseudonym(self.secret, value)
        self.uids[out] = _norm(value)
        return out


def deidentify(
    dataset: Dataset, secret: bytes, options: DeidConfig | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """Return a de-identified copy of ``dataset`` and the identified values it took out.

    Parameters
    ----------
    dataset : Dataset
        A header as `split_instance` reads it (file meta included); it is not changed.
    secret : bytes
        The pseudonym secret, ``Keyring.secret_for("pseudonym")`` (32 bytes).
    options : DeidConfig, optional
        The profile options; the defaults keep full dates.

    Returns
    -------
    (Dataset, dict)
        The clean copy, and ``identities``: ``original_<Keyword>`` for `IDENTITY_KEYWORDS`
        (text as pydicom reads it, None when absent), ``<Keyword>`` pseudonyms for
        `PSEUDONYM_KEYWORDS`, ``original_uids`` (JSON object pseudonym -> original UID, every
        UID replaced in this header), ``date_shift_days``, and ``deid_counts``: a dict of
        `COUNTS` (``removed_unknown``: standard attributes no dictionary knows,
        ``removed_private``: private attributes, ``removed_private_text``: safe-listed private
        attributes not holding numbers of their VR, ``removed_invalid``: text holding
        control characters, values beyond the VM, binary data ending in elements), each an
        int, sequences counted once.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from dicomlake.dicom.split import split_instance
    >>> split = split_instance(open(get_testdata_file("CT_small.dcm"), "rb").read())
    >>> clean, ids = deidentify(split.dataset, bytes(32))
    >>> ids["original_PatientName"], str(clean.PatientName), clean.SOPInstanceUID[:5]
    ('CompressedSamples^CT1', '', '2.25.')
    """
    original = Original.of(dataset)
    ctx = start(original, secret, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values warn as they are converted or set
        clean = _clean_copy(dataset, ctx)
        _set_marks(clean, marks(original, ctx.options))
    pseudonyms = {kw: _text(get(clean, kw)) for kw in PSEUDONYM_KEYWORDS}
    return clean, identities(ctx, pseudonyms, sop_instance_uid(clean)[0])


def start(
    header: Original,
    secret: bytes,
    options: DeidConfig | None = None,
    originals: dict[str, str | None] | None = None,
) -> Context:
    """The first phase of `deidentify`: the identified values and the date shift.

    ``originals`` are the `IDENTITY_KEYWORDS`' `original` texts, the SOPInstanceUID's as
    `Original.sop_instance_uid` names the instance, where the caller has read them already
    (the compiled header path); they are read from ``header`` otherwise.
    """
    if len(secret) < 16:
        raise ValueError(f"deidentify: the secret must have at least 16 bytes, got {len(secret)}")
    options = options or DeidConfig()
    if originals is None:
        originals = {kw: original(header, kw) for kw in IDENTITY_KEYWORDS}
        # An instance named by its file meta alone (`split.SplitInstance.sop_uid_from_meta`)
        originals["SOPInstanceUID"] = header.sop_instance_uid()[0]
    shift = 0
    if options.dates == "shift":
        key = originals["PatientID"] or "study:" + (originals["StudyInstanceUID"] or "")
        shift = date_shift_days(secret, key, options.max_shift_days)
    implicit, little = header.encoding
    return Context(secret, options, originals, shift, bool(implicit), little is not False)


def clean_meta(dataset: Dataset, ctx: Context) -> FileMetaDataset | None:
    """The cleaned file meta of ``dataset`` (None without one), by the rules of its elements.
    Its values are read as the explicit VR little endian a file meta is written in, whatever
    the dataset's encoding; a value that swallowed elements (rule 10) may hold more of the file
    meta's, or the dataset's first ones, in the dataset's encoding."""
    meta = getattr(dataset, "file_meta", None)
    if meta is None:
        return None
    as_written = dataclasses.replace(  # counts and UIDs shared
        ctx, implicit=False, little=True, after=(ctx.implicit, ctx.little)
    )
    return FileMetaDataset(_clean(meta, as_written, depth=0))


def identities(ctx: Context, pseudonyms: dict[str, str | None], sop: str | None) -> dict[str, Any]:
    """The last phase of `deidentify`: the identities record, given the clean header's
    `PSEUDONYM_KEYWORDS` texts and its SOP Instance UID (`values.sop_instance_uid`)."""
    record: dict[str, Any] = {f"original_{kw}": v for kw, v in ctx.originals.items()}
    record.update(pseudonyms)
    record["SOPInstanceUID"] = sop
    record["original_uids"] = _UIDS_JSON.encode(ctx.uids)
    record["date_shift_days"] = ctx.shift
    record["deid_counts"] = ctx.counts
    return record


def original(header: Original, keyword: str, vr: str | None = None) -> str | None:
    """An element's text as the identities keep it: its values' ``str`` without their padding
    (`values.significant`, as its element row holds them), joined with ``\\``, stripped of
    spaces and NULs; None when missing, empty or unreadable. ``vr`` is the element's, where the
    caller has read it already (else `Original.vr` reads it)."""
    value = header.get(keyword)
    if value is None:
        return None
    values = significant(vr or header.vr(keyword) or "", values_of(value))
    return kept_text("\\".join(str(v) for v in values))


def kept_text(text: str | None) -> str | None:
    """A text (an element's values' ``str`` joined with ``\\``) as the identities keep it:
    stripped of spaces and NULs, None when empty."""
    return (text.strip(" \x00") or None) if text else None


def _text(value: object) -> str | None:
    return kept_text("\\".join(str(v) for v in values_of(value)))


def _changed(elem: DataElement, value: Any) -> DataElement:
    """A copy of ``elem`` holding ``value`` (``elem`` may be shared with the input)."""
    out = copy.copy(elem)
    out.value = value
    return out


def _with(elem: DataElement, values: list[Any]) -> DataElement:
    if not values or all(v == "" for v in values):
        return _emptied(elem)
    return _changed(elem, values[0] if len(values) == 1 else values)


def _emptied(elem: DataElement) -> DataElement:
    if elem.VR == "SQ":
        return _changed(elem, Sequence([]))
    if elem.VR in BINARY_VRS:
        return _changed(elem, b"")
    if elem.VR in _NUMBER_VRS:
        return _changed(elem, None)
    return _changed(elem, "")


def _assign(ds: Dataset, keyword: str, value: Any) -> None:
    """``setattr(ds, keyword, value)``, changing a copy of an existing element; one read with
    another VR than the data dictionary's (a header that had it wrong) is replaced."""
    tag = _T[keyword]
    if tag in ds and dictionary_VR(tag) == ds[tag].VR:
        ds[tag] = _changed(ds[tag], value)
        return
    if tag in ds:
        del ds[tag]
    setattr(ds, keyword, value)


def _clean_copy(dataset: Dataset, ctx: Context) -> Dataset:
    """The clean copy of a whole header: same kind, encoding and preamble; file meta cleaned."""
    meta = clean_meta(dataset, ctx)
    elements = _clean(dataset, ctx, depth=0)
    if isinstance(dataset, FileDataset):
        implicit, little = dataset.original_encoding
        # An empty buffer: the identified bytes the input was read from are not kept
        clean = FileDataset(
            io.BytesIO(), elements, dataset.preamble, meta, bool(implicit), bool(little)
        )
        clean.set_original_encoding(implicit, little, dataset.original_character_set)
        return clean
    clean = Dataset(elements)
    if meta is not None:
        clean.file_meta = meta
    return clean


def _clean(ds: Dataset, ctx: Context, depth: int) -> dict[int, DataElement]:
    """The elements of ``ds`` that the rules keep, cleaned, in tag order."""
    kept: dict[int, DataElement] = {}
    kept_private: set[int] = set()  # private creator tags that a kept element refers to
    creators: list[int] = []
    for key in sorted(ds.keys()):
        tag = int(key)
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0:
            continue  # group lengths are wrong once anything changes
        if group % 2 and not 0x0010 <= element <= 0x00FF:
            # The private rule, whether or not the value can be read (it is counted)
            private = _safe_private(ds, key, ctx)
            if private is not None:
                kept_private.add((group << 16) | (element >> 8))
                kept[key] = private
            continue
        try:
            elem = converted_element(ds, key)
        except Exception:
            continue  # unreadable: its value cannot be checked, so it is not kept
        if group % 2:
            creators.append(tag)
            kept[key] = elem
            continue
        if not _known(tag):
            ctx.counts["removed_unknown"] += 1
            continue
        cleaned = _clean_element(elem, tag, ctx, depth)
        if cleaned is not None:
            kept[key] = cleaned
    for tag in creators:
        if tag not in kept_private:
            del kept[tag]
    return kept


def _known(tag: int) -> bool:
    """Whether a standard attribute is in pydicom's dictionary (repeating groups included) or
    in Table E.1-1: the rules can only classify what they know."""
    if profile_action(tag) is not None:
        return True
    try:
        get_entry(tag)
    except KeyError:
        return False
    return True


def _safe_private(ds: Dataset, key: BaseTag, ctx: Context) -> DataElement | None:
    """A private element (not a creator) if it is kept: safe-listed, holding numbers of the
    listed VR, and not swallowing elements (rule 10); else None, its removal counted."""
    tag = int(key)
    group, element = tag >> 16, tag & 0xFFFF
    vr = None
    if ctx.options.safe_private and element >= 0x1000:
        creator = _text(value_at(ds, BaseTag((group << 16) | (element >> 8))))
        vr = SAFE_PRIVATE.get((creator or "", group, element & 0xFF))
    if vr is None:
        ctx.counts["removed_private"] += 1
        return None
    try:
        elem = converted_element(ds, key)
    except Exception:  # unreadable: holds no numbers that can be checked
        elem = None
    if (
        elem is None
        or vr != elem.VR
        or not all(isinstance(v, (int, float)) for v in values_of(elem.value))
    ):
        ctx.counts["removed_private_text"] += 1
        return None
    if _swallowing(elem, tag, ctx):
        ctx.counts["removed_invalid"] += 1
        return None
    return elem


def _clean_element(elem: DataElement, tag: int, ctx: Context, depth: int) -> DataElement | None:
    """Rules 2-10 for one standard element: ``elem`` kept, a changed copy, or None."""
    if _not_its_kind(elem.VR, tag):  # rule 1
        ctx.counts["removed_invalid"] += 1
        return None
    cleaned = _by_rules(elem, tag, ctx, depth)
    if cleaned is not None and (
        _control(cleaned)
        or _out_of_form(cleaned)
        or (cleaned is elem and (_too_many(elem, tag) or _swallowing(elem, tag, ctx)))
    ):
        ctx.counts["removed_invalid"] += 1
        return None
    return cleaned


def _not_its_kind(vr: str, tag: int) -> bool:
    """Whether an attribute is written with a VR of another kind (`_KINDS`) than its data
    dictionary VR's."""
    kind = _dictionary_kind(tag)
    return kind is not None and _KINDS.get(vr) != kind


@functools.cache
def _dictionary_kind(tag: int) -> str | None:
    try:
        return _KINDS.get(dictionary_VR(tag))
    except KeyError:  # not in the dictionary: no kind to hold it to
        return None


def _control(elem: DataElement) -> bool:
    """Whether a text element holds a control character that no text VR allows: what a value
    holds when a bad length made it swallow the elements after it, a name among them."""
    return elem.VR in TEXT_VRS and any(_CONTROL.search(str(v)) for v in values_of(elem.value))


def _out_of_form(elem: DataElement) -> bool:
    """Whether a value of a VR with a form (a number, UID, age, date or time) does not have
    it: text typed into such an attribute (a name as a patient's weight, an ID after a date)
    would pass every rule that keeps it."""
    vr = elem.VR
    if vr not in _GRAMMARS and vr not in ("DS", "IS"):
        return False
    return not all(in_form(vr, str(value)) for value in values_of(elem.value))


def in_form(vr: str, value: str) -> bool:
    """Whether one value of DS, IS, UI, AS, DA, TM or DT has its VR's form (rule 10), padding
    aside."""
    text = value.strip(" \x00")
    grammar = _GRAMMARS.get(vr)
    return bool(grammar.fullmatch(text) if grammar else not text or reads_as_number(vr, text))


def _too_many(elem: DataElement, tag: int) -> bool:
    """Whether an element kept as read holds more values than its attribute's VM allows: what
    numbers hold when a bad length made them swallow the elements after them."""
    most = _most_values(tag)
    return elem.VR != "SQ" and most > 0 and len(values_of(elem.value)) > most


def _swallowing(elem: DataElement, tag: int, ctx: Context) -> bool:
    """Whether binary data kept as read ends in whole elements after its own: what bytes or
    numbers (of any VM) hold when a bad length made them swallow the elements after them."""
    if elem.VR not in _NUMBER_VRS and elem.VR not in BINARY_VRS:
        return False
    data = _as_read(elem, ctx.little)
    encodings = [(ctx.implicit, ctx.little), *([ctx.after] if ctx.after else [])]
    return any(ends_in_elements(data, tag, *encoding, _known) for encoding in encodings)


def _as_read(elem: DataElement, little: bool) -> bytes:
    """The bytes of a binary element's value (numbers packed again, as they were read)."""
    if elem.VR not in _NUMBER_VRS:
        return bytes(elem.value or b"")
    numbers = values_of(elem.value)
    if elem.VR == "AT":
        numbers = [n for tag in numbers for n in (int(tag) >> 16, int(tag) & 0xFFFF)]
    code = "<>"[not little] + NUMBER_FORMATS["US" if elem.VR == "AT" else elem.VR] * len(numbers)
    return struct.pack(code, *numbers)


@functools.cache
def _most_values(tag: int) -> int:
    try:
        return most_values(dictionary_VM(tag))
    except KeyError:  # Table E.1-1 only: no VM to hold it to
        return 0


def most_values(vm: str) -> int:
    """The most values a data dictionary VM allows ("1", "1-3", "2-2n"...); 0 for any number."""
    most = vm.rsplit("-", 1)[-1]
    return int(most) if most.isdigit() else 0


def _by_rules(elem: DataElement, tag: int, ctx: Context, depth: int) -> DataElement | None:
    """Rules 2-9 for one standard element: ``elem`` kept, a changed copy, or None."""
    opts, vr = ctx.options, elem.VR
    action = profile_action(tag)
    if (opts.keep_patient_characteristics and tag in PATIENT_CHARACTERISTICS) or (
        opts.keep_descriptors and tag in DESCRIPTORS
    ):
        return elem
    if tag in _PSEUDONYMISED_TEXT:
        if vr not in TEXT_VRS:
            return None  # a pseudonym cannot take its place
        keyword = _PSEUDONYMISED_TEXT[tag]
        return _with(elem, [text_pseudonym(ctx.secret, keyword, v) for v in values_of(elem.value)])
    if vr in ("DA", "DT", "TM"):
        if tag in _BIRTH:
            return None
        if vr != "TM" and ctx.shift:
            return _with(elem, [_shift(str(v), vr, ctx.shift) for v in values_of(elem.value)])
        return elem
    if vr == "UI":
        if action in _REMOVE:
            return None
        if action in ("Z", "Z/D"):
            return _emptied(elem)
        if action is None and is_class_uid(elem.keyword or ""):
            return elem
        values = [str(v) for v in values_of(elem.value)]
        if action is None and all(is_well_known_uid(v) for v in values):
            return elem
        return _with(elem, [ctx.uid(v) for v in values])
    if vr == "SQ":
        if action == "Z":
            return _emptied(elem)
        if action in _DROP_SEQUENCE and tag != _T["ContentSequence"]:
            return None
        items = [Dataset(_clean(item, ctx, depth + 1)) for item in elem.value]
        return _changed(elem, Sequence(items))
    if vr == "PN":
        return _emptied(elem) if action == "Z" else None
    if action in _REMOVE:
        return None
    if action in _EMPTY:
        return _emptied(elem)
    if action == "U":
        if vr not in TEXT_VRS:
            return None  # a pseudonym cannot take its place
        return _with(elem, [ctx.uid(str(v)) for v in values_of(elem.value)])
    if vr == "UN":
        return None  # a value not read as its VR: nothing says it is safe
    if vr in _FREE_TEXT_VRS and action is None and tag not in _CODE_ADDRESSES:
        return None
    return elem


def _parse_date(text: str) -> datetime.date | None:
    text = text.strip().replace(".", "")
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _shift(text: str, vr: str, days: int) -> str:
    """A DA or DT value moved by ``days``; partial or unreadable values are emptied."""
    date = _parse_date(text)
    if date is None or (vr == "DA" and len(text.strip().replace(".", "")) != 8):
        return ""
    try:
        moved = date + datetime.timedelta(days=days)
    except OverflowError:
        return ""
    rest = "" if vr == "DA" else text.strip()[8:]
    return moved.strftime("%Y%m%d") + rest


def age_string(birth: datetime.date, on: datetime.date, cap_years: int) -> str | None:
    """An AS value (``nnnD``, ``nnnM`` or ``nnnY``) for the age on ``on``; None if negative."""
    if on < birth:
        return None
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 1:
        return f"{min(years, cap_years):03d}Y"
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    if months >= 1:
        return f"{months:03d}M"
    return f"{(on - birth).days:03d}D"


def _cap_age(text: str, cap_years: int) -> str:
    """An age of at least ``cap_years`` years as the cap; in years too where a device left
    the unit out (``95``) or the leading zeros (``95Y``), which must not escape it."""
    match = re.fullmatch(r"([0-9]{1,3})([DWMY]?)", text.strip(" \x00"))
    if match and match.group(2) in ("Y", "") and int(match.group(1)) >= cap_years:
        return f"{cap_years:03d}Y"
    return text


def _age(header: Original, options: DeidConfig) -> str | None:
    """The clean header's PatientAge, where it is set: the original's, capped (the rules keep
    it with the patient characteristics), or computed from the birth and study dates."""
    if not options.keep_patient_characteristics:
        return None
    current = _text(header.get("PatientAge"))
    if current and _GRAMMARS["AS"].fullmatch(current.strip(" \x00")):  # else no age: text
        return _cap_age(current, options.age_cap_years)
    birth = _parse_date(str(header.get("PatientBirthDate") or ""))
    if birth is None:
        return None
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        on = _parse_date(str(header.get(keyword) or ""))
        if on is not None:
            return age_string(birth, on, options.age_cap_years)
    return None


Code = tuple[tuple[int, str, str], ...]
"""A code item of DeidentificationMethodCodeSequence: (tag, VR, text) of each element."""


def marks(header: Original, options: DeidConfig) -> list[tuple[str, Any]]:
    """What `deidentify` sets on the clean header of ``header`` after cleaning its elements,
    by keyword: the PatientAge (where set) and the de-identification marks (the code sequence
    as a tuple of `Code` items)."""
    age = _age(header, options)
    return [*([("PatientAge", age)] if age else []), *_marks(options)]


@functools.cache
def _marks(options: DeidConfig) -> tuple[tuple[str, Any], ...]:
    """The de-identification marks, the same for every header (made once per options)."""
    names = ["basic"]
    names.append("modified_dates" if options.dates == "shift" else "full_dates")
    if options.keep_patient_characteristics:
        names.append("patient_characteristics")
    if options.safe_private:
        names.append("safe_private")
    codes = []
    for name in names:
        value, meaning = _CODES[name]
        code = zip(_CODE_TAGS, (value, "DCM", meaning), strict=True)
        codes.append(tuple((int(tag), vr, text) for (tag, vr), text in code))
    return (
        ("PatientIdentityRemoved", "YES"),
        ("DeidentificationMethod", _method(options)),
        ("DeidentificationMethodCodeSequence", tuple(codes)),
        (
            "LongitudinalTemporalInformationModified",
            "MODIFIED" if options.dates == "shift" else "UNMODIFIED",
        ),
    )


def _set_marks(clean: Dataset, marked: list[tuple[str, Any]]) -> None:
    """Set `marks` on a clean header (changing copies of elements it has)."""
    for keyword, value in marked:
        if isinstance(value, tuple):  # code items: new datasets for every header
            value = Sequence(
                Dataset({BaseTag(t): DataElement(t, vr, text) for t, vr, text in code})
                for code in value
            )
        _assign(clean, keyword, value)
