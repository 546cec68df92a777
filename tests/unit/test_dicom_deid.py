"""deidentify: PS3.15 E.1-1 actions on the real corpus, keyed pseudonyms, dates, private tags.

Expected values are computed here on their own: the profile's actions come straight from the
dicom-anonymizer package's lists (not from dicomlake's generated copy), and the pseudonyms from
the documented algorithm with hmac/hashlib/uuid.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import hmac
import json
import uuid
import warnings
from pathlib import Path

import pydicom
import pytest
from corpus import corpus_id, split_paths
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dicomlake.config import DeidConfig
from dicomlake.dicom import header, split_instance
from dicomlake.dicom.deid import deidentify, options_json
from dicomlake.dicom.deid_table import ACTIONS, REPEATING
from dicomlake.errors import ConfigError

fields = pytest.importorskip(
    "dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c",
    reason="dicom-anonymizer (the test extra) holds the reference copy of Table E.1-1",
)

# pydicom warns about odd values in the corpus (a hash in a UI, a 3-character AS) as the test
# copies and compares headers; they are the point of using the real corpus.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SECRET = hashlib.sha256(b"unit-test secret").digest()
OTHER = hashlib.sha256(b"another secret").digest()
_LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
REFERENCE = {
    (t[0] << 16) | t[1]: action
    for name, action in _LISTS.items()
    for t in getattr(fields, name)
    if len(t) == 2
}
KEPT_CHARACTERISTICS = {"PatientSex", "PatientAge", "PatientSize", "PatientWeight"}
KEPT_CHARACTERISTICS |= {"PatientSexNeutered", "PregnancyStatus"}


# -- the documented algorithms, written again --------------------------------------------------


def ref_uid(secret: bytes, value: str) -> str:
    d = bytearray(
        hmac.new(secret, b"dicomlake-uid-v1\x00" + value.encode(), hashlib.sha256).digest()[:16]
    )
    d[6] = d[6] & 0x0F | 0x80
    d[8] = d[8] & 0x3F | 0x80
    return f"2.25.{uuid.UUID(bytes=bytes(d)).int}"


def ref_text(secret: bytes, keyword: str, value: str) -> str:
    msg = b"dicomlake-id-v1\x00" + keyword.encode() + b"\x00" + value.encode()
    return base64.b32encode(hmac.new(secret, msg, hashlib.sha256).digest()).decode()[:16]


def ref_shift(secret: bytes, key: str, max_days: int) -> int:
    mac = hmac.new(secret, b"dicomlake-dateshift-v1\x00" + key.encode(), hashlib.sha256).digest()
    return -(1 + int.from_bytes(mac[:8], "big") % max_days)


HEADERS = split_paths()


def _clean(path: Path, options: DeidConfig | None = None, secret: bytes = SECRET):
    ds = split_instance(path.read_bytes()).dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean, ids = deidentify(ds, secret, options or DeidConfig())
    return ds, clean, ids


def _value(ds: Dataset, tag: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ds[tag].value
        except Exception:
            return None


def _strs(value) -> list[str]:
    if value in (None, ""):
        return []
    items = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [str(v).strip(" \x00") for v in items]


def _all_uids(*datasets: Dataset) -> set[str]:
    """Every UI value at any depth, but class, syntax, scheme and well-known UIDs: those name a
    kind of object or a piece of software, never a patient's (DCMTK writes its implementation
    class UID as InstanceCreatorUID too, so a value seen as a class UID anywhere is left out)."""
    out, classes = set(), set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ds in datasets:
            for elem in ds.iterall():
                if elem.VR != "UI":
                    continue
                if elem.keyword.endswith(("ClassUID", "SyntaxUID", "SchemeUID", "ClassUIDInFile")):
                    classes |= set(_strs(elem.value))
                else:
                    out |= {v for v in _strs(elem.value) if v}
    return {v for v in out - classes if v not in pydicom.uid.UID_dictionary}


# -- the tests -----------------------------------------------------------------------------


def test_embedded_table_is_the_packages_table() -> None:
    assert ACTIONS == REFERENCE
    repeating = {
        ((t[0] << 16) | t[1], (t[2] << 16) | t[3], action)
        for name, action in _LISTS.items()
        for t in getattr(fields, name)
        if len(t) == 4
    }
    assert set(REPEATING) == repeating


@pytest.mark.parametrize("path", HEADERS, ids=corpus_id)
def test_profile_actions_on_real_headers(path: Path) -> None:
    original, clean, ids = _clean(path)
    snapshot = copy.deepcopy(original)
    for tag in list(original.keys()):
        tag = int(tag)
        if tag >> 16 & 1:
            continue  # private: see test_private_tags_removed_except_safe_list
        action = REFERENCE.get(tag)
        keyword = pydicom.datadict.keyword_for_tag(tag)
        vr = pydicom.datadict.dictionary_VR(tag) if pydicom.datadict.dictionary_has_tag(tag) else ""
        before = _value(original, tag)
        after = _value(clean, tag) if tag in clean else "<absent>"
        where = f"{keyword or hex(tag)} ({action})"
        if keyword in KEPT_CHARACTERISTICS:
            if keyword != "PatientAge":
                assert after == before, where
        elif keyword in ("PatientID", "AccessionNumber"):
            want = [ref_text(SECRET, keyword, v) for v in _strs(before)]
            assert _strs(after) == want, where
        elif keyword in ("PatientBirthDate", "PatientBirthTime"):
            assert after == "<absent>", where
        elif vr in ("DA", "DT", "TM"):
            assert after == before, where  # dates=keep
        elif vr == "UI":
            if action in ("X", "X/Z", "X/D", "X/Z/D"):
                assert after == "<absent>", where
            elif action == "U" or (
                action is None and _strs(before) and not keyword.endswith("ClassUID")
            ):
                want = [
                    v
                    if (action is None and v in pydicom.uid.UID_dictionary)
                    else ref_uid(SECRET, v)
                    for v in _strs(before)
                ]
                assert _strs(after) == want, where
                assert all(UID(v).is_valid for v in _strs(after)), where
        elif vr == "PN":
            assert after in ("<absent>", "") or not _strs(after), where
        elif action in ("X", "X/Z", "X/D", "X/Z/D") or (action == "D" and vr == "SQ"):
            if keyword != "ContentSequence":
                assert after == "<absent>", where
        elif action in ("Z", "Z/D", "D"):
            assert after == "<absent>" or not _strs(after) or vr == "SQ", where
            if vr == "SQ" and action == "Z":
                assert len(after) == 0, where
    assert clean.PatientIdentityRemoved == "YES"
    assert clean.DeidentificationMethod
    codes = {item.CodeValue for item in clean.DeidentificationMethodCodeSequence}
    assert {"113100", "113106"} <= codes
    # the input was not changed
    assert original == snapshot
    # the identified values are handed back as they were
    for keyword in ("PatientID", "PatientName", "SOPInstanceUID", "StudyInstanceUID"):
        value = original.get(keyword)
        if keyword == "SOPInstanceUID" and value is None:  # named by the file meta
            value = original.file_meta.MediaStorageSOPInstanceUID
        expected = "\\".join(_strs(value)) if value not in (None, "") else None
        assert ids[f"original_{keyword}"] == (expected or None), keyword


@pytest.mark.parametrize("path", HEADERS, ids=corpus_id)
def test_no_original_uid_is_left_anywhere(path: Path) -> None:
    original, clean, ids = _clean(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = json.dumps([str(e.value) for e in clean.iterall()])
        text += json.dumps([str(e.value) for e in clean.file_meta.iterall()])
    for value in _all_uids(original, Dataset(original.file_meta)):
        if len(value) >= 6:
            assert value not in text, value
    mapping = json.loads(ids["original_uids"])
    for value in _all_uids(clean, Dataset(clean.file_meta)):
        assert UID(value).is_valid, value
        assert ref_uid(SECRET, mapping[value]) == value  # every pseudonym maps back


@pytest.mark.parametrize("path", HEADERS, ids=corpus_id)
def test_private_tags_removed_except_safe_list(path: Path) -> None:
    _, clean, _ = _clean(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private = [e for e in clean.iterall() if e.tag.is_private]
    assert not private, [str(e.tag) for e in private]


def test_safe_private_list() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")  # B_value: on the safe list
    block.add_new(0x08, "CS", "SOMETHING")  # not on it
    other = ds.private_block(0x0029, "ACME 1.0", create=True)
    other.add_new(0x10, "LO", "Doe^John")
    clean, _ = deidentify(ds, SECRET)
    assert clean[0x0019100C].value == "1000"
    assert clean[0x00190010].value == "SIEMENS MR HEADER"
    assert 0x00191008 not in clean and 0x00291010 not in clean and 0x00290010 not in clean
    none, _ = deidentify(ds, SECRET, DeidConfig(safe_private=False))
    assert not [e for e in none if e.tag.is_private]


def _ct_with(build) -> tuple[Dataset, Dataset, dict]:
    """CT_small with elements added by ``build(ds)``, written, split and de-identified."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    build(ds)
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out)
    original = split_instance(out.getvalue()).dataset
    clean, ids = deidentify(original, SECRET)
    return original, clean, ids


def _private_data(ds: Dataset) -> list[int]:
    """Top-level private elements that are not private creators."""
    tags = [elem.tag for elem in ds]
    return [int(t) for t in tags if t.group % 2 and not 0x10 <= t.element <= 0xFF]


def test_unknown_standard_attributes_are_removed_and_counted() -> None:
    def build(ds: Dataset) -> None:
        ds.add_new(0x00107777, "LO", "Doe^John")
        item = Dataset()
        item.PatientName = "Doe^John"
        ds.add_new(0x00107779, "SQ", Sequence([item]))
        ds.add_new(0x60000010, "US", 512)  # OverlayRows (60xx,0010): a repeating group

    original, clean, ids = _ct_with(build)
    assert original[0x00107777].value == "Doe^John"
    assert 0x00107777 not in clean and 0x00107779 not in clean
    assert clean[0x60000010].value == 512  # known through the dictionary's repeating groups
    assert "Doe^John" not in json.dumps([str(e.value) for e in clean.iterall()])
    assert ids["deid_counts"]["removed_unknown"] == 2


def test_private_attributes_are_counted_and_safe_ones_kept_only_as_numbers() -> None:
    def build(ds: Dataset) -> None:
        siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        siemens.add_new(0x0C, "LO", "Doe^John")  # B_value, but text
        siemens.add_new(0x0E, "FD", [0.0, 0.6, 0.8])  # DiffusionGradientDirection
        siemens.add_new(0x0D, "CS", "DOE JOHN")  # DiffusionDirectionality: text, not listed
        acme = ds.private_block(0x0029, "ACME 1.0", create=True)
        item = Dataset()
        item.add_new(0x00291010, "LO", "Doe^John")
        acme.add_new(0x20, "SQ", Sequence([item]))

    original, clean, ids = _ct_with(build)
    siemens = original.private_block(0x0019, "SIEMENS MR HEADER")
    assert [float(v) for v in clean[siemens.get_tag(0x0E)].value] == [0.0, 0.6, 0.8]
    assert siemens.get_tag(0x0C) not in clean and siemens.get_tag(0x0D) not in clean
    assert not [e for e in clean if e.tag.group == 0x0029]
    counts = ids["deid_counts"]
    assert counts["removed_private_text"] == 1
    kept = _private_data(clean)
    assert counts["removed_private"] + counts["removed_private_text"] + len(kept) == len(
        _private_data(original)
    )


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """An element as read from an explicit VR little endian file."""
    return RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)


def _unreadable(elem: RawDataElement) -> bool:
    try:
        Dataset({elem.tag: elem})[elem.tag]
    except Exception:
        return True
    return False


def test_private_values_that_cannot_be_read_are_removed_and_counted() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    # The data elements before their creators: pydicom converts a private element it adds
    # after its creator, as a reader would not
    ds[0x00211093] = _raw(0x00211093, "FL", b"\x00" * 6)  # FL values come in 4 bytes
    ds[0x00211094] = _raw(0x00211094, "LO", b"ABCD")
    ds[0x0019100E] = _raw(0x0019100E, "FD", b"\x00" * 12)  # safe-listed, FD: 8 bytes each
    ds[0x00210010] = _raw(0x00210010, "LO", b"GEMS_STDY_01")
    ds[0x00190010] = _raw(0x00190010, "LO", b"SIEMENS MR HEADER ")
    assert _unreadable(ds.get_item(0x00211093)) and _unreadable(ds.get_item(0x0019100E))
    clean, ids = deidentify(ds, SECRET)
    assert not [e for e in clean if e.tag.is_private]
    counts = ids["deid_counts"]
    assert (counts["removed_private"], counts["removed_private_text"]) == (2, 1)


def test_pseudonymised_attributes_holding_no_text_are_removed() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds[0x00100020] = _raw(0x00100020, "US", b"\x07\x00")  # PatientID read as a number
    ds[0x0020000D] = _raw(0x0020000D, "DS", b"1.5 ")  # StudyInstanceUID (action U) as DS
    clean, ids = deidentify(ds, SECRET)
    assert 0x00100020 not in clean and 0x0020000D not in clean
    assert (ids["original_PatientID"], ids["PatientID"]) == ("7", None)
    assert (ids["original_StudyInstanceUID"], ids["StudyInstanceUID"]) == ("1.5", None)


def test_marks_replace_elements_read_with_another_vr() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds[0x00120062] = _raw(0x00120062, "DS", b"1.0 ")  # PatientIdentityRemoved, CS
    ds[0x00101010] = _raw(0x00101010, "DS", b"45")  # PatientAge, AS
    clean, _ = deidentify(ds, SECRET)
    assert (clean[0x00120062].VR, clean[0x00120062].value) == ("CS", "YES")
    assert (clean[0x00101010].VR, clean[0x00101010].value) == ("AS", "45")


@pytest.mark.parametrize(
    ("keyword", "vr", "value"),
    [
        ("Modality", "CS", b"CT\x08\x00p\x00LO\x02\x00GE"),  # a code string that swallowed
        ("Manufacturer", "LO", b"ACME\x00Doe^Jane"),
        ("StudyDescription", "LO", b"Head\x1b"),  # kept by keep_descriptors
        ("ContentDate", "DA", b"20200101\x01"),
        ("SOPClassUID", "UI", b"1.2.840.10008.5.1.4.1.1.2\x10"),  # a class: kept as it is
    ],
)
def test_kept_text_holding_control_characters_is_removed_and_counted(
    keyword: str, vr: str, value: bytes
) -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    tag = BaseTag(pydicom.datadict.tag_for_keyword(keyword))
    ds[tag] = _raw(tag, vr, value + b" " * (len(value) % 2))
    clean, ids = deidentify(ds, SECRET, DeidConfig(keep_descriptors=True))
    assert tag not in clean
    assert ids["deid_counts"]["removed_invalid"] == 1


@pytest.mark.parametrize(
    ("tag", "vr", "count", "kept"),
    [
        (0x00280010, "US", 1, True),  # Rows, VM 1
        (0x00280010, "US", 10, False),  # numbers that swallowed the elements after them
        (0x00181310, "US", 4, True),  # AcquisitionMatrix, VM 4
        (0x00181310, "US", 5, False),
        (0x60000010, "US", 2, False),  # OverlayRows of a repeating group, VM 1
        (0x00280120, "SS", 3, False),  # PixelPaddingValue, VM 1
        (0x00189376, "US", 40, True),  # ReferencedXRayDetectorIndex: VM 1-n, any number
    ],
)
def test_elements_kept_as_read_hold_no_more_values_than_their_vm(
    tag: int, vr: str, count: int, kept: bool
) -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds[tag] = _raw(tag, vr, bytes(range(2 * count)))
    clean, ids = deidentify(ds, SECRET)
    assert (tag in clean) == kept
    assert ids["deid_counts"]["removed_invalid"] == (0 if kept else 1)


@pytest.mark.parametrize("text", ["line\r\nbreak", "tab\there", "form\x0cfeed", "plain"])
def test_kept_text_holding_only_the_controls_text_allows_is_kept(text: str) -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Manufacturer = text
    clean, ids = deidentify(ds, SECRET)
    assert clean.Manufacturer == text
    assert ids["deid_counts"]["removed_invalid"] == 0


def test_uids_consistent_inside_sequences_and_across_files() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.ReferencedImageSequence = Sequence([item])
    ds.ImageComments = "Doe^John was here"
    clean, ids = deidentify(ds, SECRET)
    ref = clean.ReferencedImageSequence[0]
    assert (
        ref.ReferencedSOPInstanceUID == clean.SOPInstanceUID == ref_uid(SECRET, ds.SOPInstanceUID)
    )
    assert ref.ReferencedSOPClassUID == ds.SOPClassUID == clean.SOPClassUID  # a class: kept
    assert "ImageComments" not in clean
    again, _ = deidentify(ds, SECRET)
    assert again.StudyInstanceUID == clean.StudyInstanceUID  # stable
    other, _ = deidentify(ds, OTHER)
    assert other.StudyInstanceUID != clean.StudyInstanceUID  # secret-dependent
    assert json.loads(ids["original_uids"])[clean.SOPInstanceUID] == ds.SOPInstanceUID


def test_one_patient_one_pseudonym_across_corpus_files() -> None:
    by_patient: dict[str, set[str]] = {}
    for path in HEADERS[:80]:
        original, clean, _ = _clean(path)
        pid = original.get("PatientID")
        if pid:
            by_patient.setdefault(str(pid).strip(), set()).add(clean.PatientID)
    assert by_patient
    for pid, pseudonyms in by_patient.items():
        assert pseudonyms == {ref_text(SECRET, "PatientID", pid)}, pid
    assert len({next(iter(p)) for p in by_patient.values()}) == len(by_patient)


def test_dates_shift_per_patient() -> None:
    path = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    options = DeidConfig(dates="shift", max_shift_days=100)
    original, clean, ids = _clean(path, options)
    days = ref_shift(SECRET, str(original.PatientID), 100)
    assert -100 <= days <= -1 and ids["date_shift_days"] == days
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        before = datetime.datetime.strptime(original.get(keyword), "%Y%m%d").date()
        assert clean.get(keyword) == (before + datetime.timedelta(days=days)).strftime("%Y%m%d")
    assert clean.StudyTime == original.StudyTime  # times of day are kept
    assert clean.LongitudinalTemporalInformationModified == "MODIFIED"
    kept = _clean(path)[1]
    assert kept.StudyDate == original.StudyDate
    assert kept.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_age_from_birth_date_and_cap() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.PatientID = "P-0042"
    ds.PatientBirthDate = "19800315"
    ds.StudyDate = "20200314"
    clean, ids = deidentify(ds, SECRET)
    assert clean.PatientAge == "039Y" and "PatientBirthDate" not in clean
    assert ids["original_PatientBirthDate"] == "19800315"
    ds.PatientBirthDate = "19200101"
    assert deidentify(ds, SECRET)[0].PatientAge == "090Y"
    ds.PatientBirthDate = "20200201"
    assert deidentify(ds, SECRET)[0].PatientAge == "001M"
    ds.PatientAge = "095Y"
    assert deidentify(ds, SECRET)[0].PatientAge == "090Y"
    # Written without its leading zero or unit, an age in years is capped all the same
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the forms it is made to hold
        for written in ("95Y", "95", "123"):
            ds.PatientAge = written
            assert deidentify(ds, SECRET)[0].PatientAge == "090Y", written
        ds.PatientAge = "45"
        assert deidentify(ds, SECRET)[0].PatientAge == "45"
        # Text that is no age is not kept as one: the age comes from the dates again
        ds.PatientAge = "DOE^JOHN"
        assert deidentify(ds, SECRET)[0].PatientAge == "001M"


def test_input_is_not_changed_though_elements_are_shared() -> None:
    # The clean copy shares the elements it keeps unchanged with the input; every change,
    # including the ones made after the rules (age cap, marks), must go to a copy.
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.PatientID = "P-0042"
    ds.PatientAge = "095Y"
    ds.StudyDate = "20200314"
    ds.PatientIdentityRemoved = "NO"
    ds.DeidentificationMethod = "none"
    ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.ReferencedImageSequence = Sequence([item])
    before = copy.deepcopy(ds)
    for options in (DeidConfig(), DeidConfig(dates="shift")):
        clean, _ = deidentify(ds, SECRET, options)
        assert ds == before
        assert clean.PatientAge == "090Y" and clean.PatientIdentityRemoved == "YES"
        assert clean.DeidentificationMethod != "none"
        ref = clean.ReferencedImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == ref_uid(SECRET, item.ReferencedSOPInstanceUID)
        assert ref is not item and ref.ReferencedSOPClassUID == item.ReferencedSOPClassUID
        assert (clean.StudyDate == ds.StudyDate) == (options.dates == "keep")
        clean.SOPClassUID = "1.2.3"  # a later change to the copy does not reach the input
        assert "SOPClassUID" not in ds


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match="deid.dates.*'sometimes'"):
        DeidConfig(dates="sometimes")
    with pytest.raises(ConfigError, match="deid.max_shift_days"):
        DeidConfig(max_shift_days=0)
    assert json.loads(options_json(DeidConfig(dates="shift")))["dates"] == "shift"


def _item(**elements: tuple[str, object]) -> Dataset:
    item = Dataset()
    for keyword, (vr, value) in elements.items():
        item.add_new(pydicom.datadict.tag_for_keyword(keyword), vr, value)
    return item


def _encoded_item(item: Dataset) -> bytes:
    """An item as a writer puts it in a sequence (explicit VR little endian)."""
    out = pydicom.filebase.DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(out, item)
    body = out.getvalue()
    return b"\xfe\xff\x00\xe0" + len(body).to_bytes(4, "little") + body


# Identifiers planted where a header may hold them outside the attributes Table E.1-1 lists
# (keyword: (VR as written, value)); each value holds "ZZLEAK", or the planted UID or date
PLANTED_UID, PLANTED_DATE = "1.2.826.0.1.3680043.9.424242", "19421231"
LEAKS = {
    # Dates of birth and death in another calendar (not in the table)
    "birth-date-alternative-calendar": {
        "PatientBirthDateInAlternativeCalendar": ("LO", "ZZLEAK 1942-03-15")
    },
    "death-date-alternative-calendar": {
        "PatientDeathDateInAlternativeCalendar": ("LO", "ZZLEAK 2020-01-02")
    },
    # Attributes written with a VR of another kind than their dictionary VR's
    "name-written-as-LO": {"EvaluatorName": ("LO", "ZZLEAK^EVALUATOR")},
    "free-text-written-as-LO": {"DetectorDescription": ("LO", "ZZLEAK detector")},
    "free-text-written-as-OB": {"ImageFilterDescription": ("OB", b"ZZLEAK filter")},
    "uid-written-as-LO": {"StudyInstanceUID": ("LO", PLANTED_UID)},
    "date-written-as-LO": {"StudyDate": ("LO", PLANTED_DATE)},
    "sequence-written-as-OB": {
        "ReferencedPatientSequence": (
            "OB",
            _encoded_item(_item(PatientName=("PN", "ZZLEAK^NAME"))),
        )
    },
    "text-item-written-as-LO": {
        "ContentSequence": ("SQ", [_item(TextValue=("LO", "ZZLEAK report text"))])
    },
    # Addresses (UR) the table does not list
    "retrieve-url": {"RetrieveURL": ("UR", f"https://pacs/studies/{PLANTED_UID}?PatientID=ZZLEAK")},
    "retrieve-url-in-an-item": {
        "ReferencedSeriesSequence": (
            "SQ",
            [_item(RetrieveURL=("UR", "https://pacs/series?PatientID=ZZLEAK"))],
        )
    },
    "file-access-uri": {"FileAccessURI": ("UR", "file:///archive/ZZLEAK/1.dcm")},
    # Overlays' free text (the table lists only their comments), in two overlay groups
    "overlay-description-and-label": {
        0x60000022: ("LO", "ZZLEAK overlay description"),  # Overlay Description
        0x60021500: ("LO", "ZZLEAK^LABEL"),  # Overlay Label
    },
}


def _planted_file(elements: dict[str | int, tuple[str, object]]) -> bytes:
    """CT_small with ``elements`` added, by keyword or by tag (a repeating group's)."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    for keyword, (vr, value) in elements.items():
        tag = keyword if isinstance(keyword, int) else pydicom.datadict.tag_for_keyword(keyword)
        ds.add_new(tag, vr, Sequence(value) if vr == "SQ" else value)
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize("case", LEAKS)
@pytest.mark.parametrize("dates", ["keep", "shift"])
def test_identifiers_outside_the_table_reach_no_analyst_row(case: str, dates: str) -> None:
    data = _planted_file(LEAKS[case])
    marks = ["ZZLEAK", PLANTED_UID, PLANTED_DATE]
    assert any(m.encode() in data for m in marks)  # the file holds it
    options = DeidConfig(dates=dates)
    for records in (
        header.header_records(split_instance(data), SECRET, options),
        header._reference(split_instance(data), SECRET, options),
    ):
        text = records.header_json + json.dumps(records.elements.to_pylist())
        binary = b"".join(_inline_binaries(json.loads(records.header_json)))
        for mark in marks:
            assert mark.lower() not in text.lower(), (records.path, mark)
            assert mark.encode().hex() not in text.lower(), (records.path, mark)
            assert mark.encode() not in binary, (records.path, mark)


def _inline_binaries(node: object) -> list[bytes]:
    """Every InlineBinary value of a DICOM JSON document, decoded."""
    if isinstance(node, dict):
        found = [base64.b64decode(node["InlineBinary"])] if "InlineBinary" in node else []
        return found + [b for value in node.values() for b in _inline_binaries(value)]
    if isinstance(node, list):
        return [b for value in node for b in _inline_binaries(value)]
    return []


def test_code_addresses_are_kept() -> None:
    scheme = "http://snomed.info/sct"
    data = _planted_file({"CodingSchemeURL": ("UR", scheme)})
    for records in (
        header.header_records(split_instance(data), SECRET, DeidConfig()),
        header._reference(split_instance(data), SECRET, DeidConfig()),
    ):
        assert scheme in records.header_json
