"""Protected health information: analysts' tables hold pseudonyms, identities are encrypted.

The whole sample corpus is ingested once; the identifying values of the ORIGINAL files are
collected here with pydicom on its own, then searched for in every byte of every Parquet file
under ``<lake>/tables/`` (raw, zstd-compressed pages) and in every decompressed column value.
Pseudonyms are recomputed from the documented algorithm (``ingest_helpers.ref_*``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import shutil
import warnings
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from ingest_helpers import ref_text, ref_uid, table
from pydicom.multival import MultiValue

from dicomlake.cli import main
from dicomlake.config import DeidConfig
from dicomlake.crypto import kms
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import MissingKeyError
from dicomlake.ingest.job import run_ingest
from dicomlake.keys import save_keyring
from dicomlake.lake import schemas
from dicomlake.lake.identities import read_identities
from dicomlake.samples import build_sample_landing

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning"),
    pytest.mark.filterwarnings("ignore:The value length:UserWarning"),
]

# Values too common to mean anyone: a placeholder some files carry instead of a name, or words
# that are also legitimate non-identifying values elsewhere in the corpus.
COMMON = {"anonymous", "anonymized", "anonymised", "unknown", "none", "removed", "phantom"}
# Test files with placeholder names ("PATIENT^NAME", "...^Modality") whose words are also DICOM
# vocabulary in coded values analysts keep (a CS "PATIENT", a CodeMeaning "Modality").
COMMON |= {"test", "patient", "modality"}
# Attributes that name equipment, not people: an InstitutionName that is also a Manufacturer
# (e.g. "TOSHIBA") is the vendor's name, which analysts keep on purpose.
EQUIPMENT = ("Manufacturer", "ManufacturerModelName")
NAME_KEYWORDS = ("PatientName", "ReferringPhysicianName")
ID_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
)
CLASS_SUFFIXES = ("ClassUID", "SyntaxUID", "SchemeUID", "ClassUIDInFile")


def _read(path: Path) -> pydicom.Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            list(ds.iterall())  # values that cannot even be listed: not a header
            return ds
        except Exception:
            return None


def _strs(value: object) -> list[str]:
    if value is None:
        return []
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return [s for s in (str(v).strip(" \x00") for v in items) if s]


def _text(value: object) -> str | None:
    return "\\".join(_strs(value)) or None


@pytest.fixture(scope="module")
def phi_lake(tmp_path_factory, sc, config, keyring):
    """The whole sample corpus ingested with the default (de-identifying) config.

    Landing paths are not PHI for this issue (the lake keeps ``source_path`` as lineage), but
    some sample folders are named after a PatientID (pydicom's dicomdirtests/77654033/...):
    the files are copied under neutral names so that the search below stays meaningful.
    """
    root = tmp_path_factory.mktemp("phi")
    samples, landing, lake = root / "samples", root / "landing", root / "lake"
    build_sample_landing(samples)
    landing.mkdir()
    for n, path in enumerate(sorted(p for p in samples.rglob("*") if p.is_file())):
        shutil.copy(path, landing / f"f{n:04d}{path.suffix}")
    run_ingest(sc, str(landing), str(lake), config, keyring)
    return landing, lake


@pytest.fixture(scope="module")
def originals(phi_lake) -> dict[str, pydicom.Dataset]:
    """pydicom's reading of every landing file it can read, by source path."""
    landing, _ = phi_lake
    out = {}
    for path in sorted(p for p in landing.rglob("*") if p.is_file()):
        ds = _read(path)
        if ds is not None and len(ds):
            out[str(path)] = ds
    return out


def _identifying_values(originals: dict[str, pydicom.Dataset]) -> dict[str, str]:
    """value -> where it came from, for every identifying value worth searching for."""
    found: dict[str, str] = {}
    kept_dates: set[str] = set()
    equipment: set[str] = set()
    classes: set[str] = set()
    uids: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, ds in originals.items():
            name = Path(path).name
            for keyword in EQUIPMENT:
                equipment |= {v.lower() for v in _strs(ds.get(keyword))}
            for elem in ds.iterall():
                if elem.VR == "DA" and elem.keyword != "PatientBirthDate":
                    kept_dates |= set(_strs(elem.value))
            for keyword in NAME_KEYWORDS:
                for value in _strs(ds.get(keyword)):
                    # each component of a person name (family, given, middle...; and the
                    # ideographic/phonetic groups), of at least 4 characters
                    for part in value.replace("=", "^").split("^"):
                        if len(part.strip()) >= 4:
                            found.setdefault(part.strip(), f"{keyword} of {name}")
            for keyword in ID_KEYWORDS:
                for value in _strs(ds.get(keyword)):
                    found.setdefault(value, f"{keyword} of {name}")
            for elem in list(ds.iterall()) + list(ds.file_meta.iterall()):
                if elem.VR != "UI":
                    continue
                if elem.keyword.endswith(CLASS_SUFFIXES):
                    classes |= set(_strs(elem.value))
                else:
                    for value in _strs(elem.value):
                        uids.setdefault(value, f"{elem.keyword or elem.tag} of {name}")
    for value, where in uids.items():
        # a class/syntax/scheme UID or a well-known one names a kind of object or software
        # (DCMTK reuses its implementation class UID as InstanceCreatorUID), never a patient
        if value not in classes and value not in pydicom.uid.UID_dictionary:
            found.setdefault(value, where)
    out = {}
    for value, where in found.items():
        if value.lower() in COMMON or any(value.lower() in e for e in equipment):
            continue
        # dates=keep (the default) keeps study dates: a birth date that is also a study,
        # series or content date in the corpus (emri_small: born on its study day) is kept as
        # that date, which is what the option promises
        if where.startswith("PatientBirthDate") and value in kept_dates:
            continue
        # short values (an ID "1", "12345") occur by chance in any text: name components need
        # >= 4 characters and a letter; other values >= 6 characters
        name = where.startswith(NAME_KEYWORDS) and any(c.isalpha() for c in value)
        if len(value) < (4 if name else 6):
            continue
        out[value] = where
    return out


def _pattern(value: str) -> re.Pattern[bytes]:
    """``value`` as a whole word: "MARY" is a name, not the middle of "PRIMARY"."""
    return re.compile(rb"(?<![A-Za-z0-9])" + re.escape(value.encode()) + rb"(?![A-Za-z0-9])")


def _as_text(value: object) -> str:
    """A value as text; the lake's times to the millisecond they hold, since str() pads a time
    to microseconds and ".710000" would match a six-digit ID by chance."""
    if isinstance(value, datetime.datetime):
        return value.isoformat(timespec="milliseconds")
    return str(value)


def _metadata_text(path: Path) -> str:
    """A Parquet file's schema, key-value metadata and every column chunk's min/max."""
    meta = pq.ParquetFile(path).metadata
    parts = [str(meta.schema), repr(meta.metadata)]
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            stats = meta.row_group(g).column(c).statistics
            if stats is not None and stats.has_min_max:
                parts += [_as_text(stats.min), _as_text(stats.max)]
    return "\n".join(parts)


def _column_text(path: Path) -> str:
    """Every value of every column of a Parquet file, decompressed, as text."""
    t = pq.read_table(path)
    parts = []
    for column in t.columns:
        parts.append(json.dumps(column.to_pylist(), default=_as_text, ensure_ascii=False))
    return "\n".join(parts)


def test_no_identifying_value_in_any_analyst_file(phi_lake, originals):
    _, lake = phi_lake
    needles = _identifying_values(originals)
    assert len(needles) > 300  # the corpus has names, IDs, dates, many UIDs
    kinds = {where.split(" of ")[0] for where in needles.values()}
    assert {"PatientName", "PatientID", "SOPInstanceUID", "StudyInstanceUID"} <= kinds
    files = sorted((lake / "tables").rglob("*.parquet"))
    assert {p.relative_to(lake / "tables").parts[0] for p in files} >= {
        "instances",
        "elements",
        "frames",
        "sources",
        "runs",
    }
    patterns = {value: _pattern(value) for value in needles}
    leaks = []
    for path in files:
        raw = path.read_bytes()
        text = (_column_text(path) + "\n" + _metadata_text(path)).encode()
        for value, where in needles.items():
            needle = value.encode()
            # A short run of digits turns up by chance in compressed bytes: such values are
            # searched in what the file decodes to (values, statistics, metadata) only
            in_raw = (len(value) >= 8 or not value.isdigit()) and needle in raw
            if (in_raw or needle in text) and (
                (in_raw and patterns[value].search(raw)) or patterns[value].search(text)
            ):
                leaks.append(f"{where}: {value!r} in {path.relative_to(lake)}")
    assert not leaks, "\n".join(leaks[:40])


def test_restricted_table_is_outside_tables(phi_lake):
    _, lake = phi_lake
    files = list((lake / "restricted" / "identities").glob("*.parquet"))
    assert files
    assert not list((lake / "tables").rglob("*identit*"))


def test_one_patient_one_pseudonym(phi_lake, originals, keyring):
    _, lake = phi_lake
    secret = keyring.secret_for("pseudonym")
    by_patient: dict[str, set[str]] = defaultdict(set)
    by_study: dict[str, set[str]] = defaultdict(set)
    for row in table(lake, "instances").to_pylist():
        ds = originals.get(row["source_path"])
        if ds is None:
            continue
        if _text(ds.get("PatientID")):
            by_patient[_text(ds.get("PatientID"))].add(row["PatientID"])
        if _text(ds.get("StudyInstanceUID")):
            by_study[_text(ds.get("StudyInstanceUID"))].add(row["StudyInstanceUID"])
    assert len(by_patient) > 20 and max(len(v) for v in by_patient.values()) == 1
    for original, pseudonyms in by_patient.items():
        assert pseudonyms == {
            "\\".join(ref_text(secret, "PatientID", v) for v in original.split("\\"))
        }
    for original, pseudonyms in by_study.items():
        assert pseudonyms == {ref_uid(secret, original)}
    # distinct patients, distinct pseudonyms
    assert len({next(iter(v)) for v in by_patient.values()}) == len(by_patient)
    # and joins work: frames and elements carry the same SOPInstanceUID as instances
    sop = {r["instance_id"]: r["SOPInstanceUID"] for r in table(lake, "instances").to_pylist()}
    frames = table(lake, "frames").select(["instance_id", "SOPInstanceUID"]).to_pylist()
    assert all(sop[r["instance_id"]] == r["SOPInstanceUID"] for r in frames)
    ledger = [r for r in table(lake, "sources").to_pylist() if r["outcome"] == "ingested"]
    assert all(sop[r["instance_id"]] == r["SOPInstanceUID"] for r in ledger)


def _subset(phi_lake, root: Path, n: int = 25) -> Path:
    landing, _ = phi_lake
    sub = root / "landing"
    sub.mkdir(parents=True)
    for path in sorted(landing.rglob("*.dcm"))[:n]:
        shutil.copy(path, sub / f"{path.parent.name}-{path.name}")
    return sub


def _pseudonyms(lake: Path) -> dict[str, tuple]:
    keys = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    return {
        r["instance_id"]: tuple(r[k] for k in keys) for r in table(lake, "instances").to_pylist()
    }


def test_reingest_same_pseudonyms_other_secret_different(phi_lake, tmp_path, sc, config, keyring):
    _, lake = phi_lake
    landing = _subset(phi_lake, tmp_path)
    run_ingest(sc, str(landing), str(tmp_path / "again"), config, keyring)
    first, again = _pseudonyms(lake), _pseudonyms(tmp_path / "again")
    assert again and all(first[i] == p for i, p in again.items())
    other = Keyring.generate("symmetric")
    run_ingest(sc, str(landing), str(tmp_path / "other"), config, other)
    different = _pseudonyms(tmp_path / "other")
    assert different.keys() == again.keys()
    for instance, values in different.items():
        for a, b in zip(values, again[instance], strict=True):
            assert a is None or a != b


def test_runs_record_the_options(phi_lake):
    _, lake = phi_lake
    runs = table(lake, "runs").to_pylist()
    options = json.loads(runs[0]["deid_options"])
    assert options["enabled"] is True and options["dates"] == "keep"
    assert "2026c" in options["profile"] and options["algorithm"] == "dicomlake-deid-v1"


def _expected_identities(originals, lake) -> dict[str, dict[str, str | None]]:
    out = {}
    for row in table(lake, "instances").to_pylist():
        ds = originals.get(row["source_path"])
        if ds is None:
            continue
        out[row["instance_id"]] = {
            f"original_{kw}": _text(ds.get(kw))
            for kw in (
                "PatientID",
                "PatientName",
                "PatientBirthDate",
                "AccessionNumber",
                "InstitutionName",
                "ReferringPhysicianName",
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "SOPInstanceUID",
            )
        }
        out[row["instance_id"]]["SOPInstanceUID"] = row["SOPInstanceUID"]
    return out


def test_restricted_table_with_key_pyarrow(phi_lake, originals, config, keyring):
    _, lake = phi_lake
    expected = _expected_identities(originals, lake)
    rows = {r["instance_id"]: r for r in read_identities(str(lake), keyring, config).to_pylist()}
    assert rows.keys() == {r["instance_id"] for r in table(lake, "instances").to_pylist()}
    assert len(expected) >= 150
    for instance, want in expected.items():
        got = rows[instance]
        for key, value in want.items():
            assert got[key] == value, (instance, key)
        uids = json.loads(got["original_uids"])
        assert uids[got["SOPInstanceUID"]] == want["original_SOPInstanceUID"]


def test_restricted_table_without_key_fails_on_protected_columns(phi_lake, config, keyring):
    _, lake = phi_lake
    path = sorted((lake / "restricted" / "identities").glob("*.parquet"))[0]
    clear = pq.read_table(path, columns=schemas.IDENTITY_CLEAR)  # plaintext footer
    assert clear.num_rows > 0
    for column in ("original_PatientName", "original_PatientID", "original_uids"):
        with pytest.raises(OSError):
            pq.read_table(path, columns=[column])
    with pytest.raises(OSError):
        pq.read_table(path)
    # the protected values are not in the file's bytes either (pages encrypted, not only hidden)
    raw = path.read_bytes()
    opened = pq.read_table(path, decryption_properties=kms.decryption_properties(keyring))
    secrets = [v for v in opened.column("original_SOPInstanceUID").to_pylist() if v]
    assert secrets and not [v for v in secrets if v.encode() in raw]
    with pytest.raises(MissingKeyError):  # the column keys name the lake's KEK
        read_identities(str(lake), Keyring.generate("symmetric"), config)


def test_restricted_table_with_spark(phi_lake, originals, spark, keyring):
    _, lake = phi_lake
    path = str(lake / "restricted" / "identities")
    expected = _expected_identities(originals, lake)
    df = spark.read.options(**kms.spark_options(keyring)).parquet(path)
    rows = {r["instance_id"]: r.asDict() for r in df.collect()}
    assert rows.keys() >= expected.keys()
    for instance, want in expected.items():
        for key, value in want.items():
            assert rows[instance][key] == value, (instance, key)
    # without the key: the clear columns read, the protected ones do not
    plain = spark.read.parquet(path)
    assert plain.select("SOPInstanceUID").count() == len(rows)
    with pytest.raises(Exception, match="(?i)crypto|decrypt|key|FAILED_READ_FILE"):
        plain.select("original_PatientName").collect()


def test_spark_writes_what_pyarrow_reads(tmp_path, spark, keyring):
    """The two KMS clients share one wrapping format (Spark writes, pyarrow reads)."""
    df = spark.createDataFrame([("i1", "Doe^Jane")], "instance_id string, original string")
    out = str(tmp_path / "spark")
    (
        df.coalesce(1)
        .write.options(**kms.spark_options(keyring))
        .option("parquet.encryption.column.keys", f"{kms.COLUMN_KEY_ID}:original")
        .option("parquet.encryption.footer.key", kms.FOOTER_KEY_ID)
        .option("parquet.encryption.plaintext.footer", "true")
        .parquet(out)
    )
    [part] = list(Path(out).glob("*.parquet"))
    got = pq.read_table(part, decryption_properties=kms.decryption_properties(keyring))
    assert got.to_pylist() == [{"instance_id": "i1", "original": "Doe^Jane"}]
    assert b"Doe^Jane" not in part.read_bytes()


def test_reidentify_command(phi_lake, originals, tmp_path, config, keyring, capsys):
    _, lake = phi_lake
    keyring_path = tmp_path / "keyring.json"
    save_keyring(str(keyring_path), keyring, config)
    row = next(r for r in table(lake, "instances").to_pylist() if r["source_path"] in originals)
    original = originals[row["source_path"]]
    # in process: the command's own code path, output as it prints it
    code = main(
        [
            "reidentify",
            "--lake",
            str(lake),
            "--keyring",
            str(keyring_path),
            "--pseudonym",
            row["SOPInstanceUID"],
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["rows"] >= 1
    hit = lines[0]
    assert hit["original"] == _text(original.SOPInstanceUID)
    assert hit["original_PatientName"] == _text(original.get("PatientName"))


def test_deid_disabled_keeps_everything(phi_lake, tmp_path, sc, config, keyring, originals):
    landing = _subset(phi_lake, tmp_path, n=40)
    plain = dataclasses.replace(config, deid=DeidConfig(enabled=False))
    run_ingest(sc, str(landing), str(tmp_path / "lake"), plain, keyring)
    lake = tmp_path / "lake"
    assert not (lake / "restricted").exists()
    assert json.loads(table(lake, "runs").to_pylist()[0]["deid_options"]) == {"enabled": False}
    elements = table(lake, "elements")
    assert any(elements.column("private_creator").to_pylist())
    for row in table(lake, "instances").to_pylist():
        ds = _read(Path(row["source_path"]))
        if ds is not None and _text(ds.get("SOPInstanceUID")):
            assert row["SOPInstanceUID"] == _text(ds.SOPInstanceUID)
