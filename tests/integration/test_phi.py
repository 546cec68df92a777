"""Protected health information: analysts' tables hold pseudonyms, identities are encrypted.

The whole sample corpus is ingested once, from a landing zone laid out as PACS exports are
(``<PatientName>-<PatientID>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``); the identifying values
of the ORIGINAL files are collected here with pydicom on its own, then searched for in every
byte of every Parquet file under ``<lake>/tables/`` (raw, zstd-compressed pages) and in every
decompressed column value, in every byte under ``<lake>/quarantine/``, and in every byte of a
full snapshot's backup repository. Pseudonyms are recomputed from the documented algorithm
(``ingest_helpers.ref_*``).
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
from ingest_helpers import ref_path_id, ref_text, ref_uid, table, with_paths
from pydicom.multival import MultiValue

from dicomlake.backup import take_snapshot, verify
from dicomlake.cli import main
from dicomlake.config import DeidConfig
from dicomlake.crypto import kms
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import MissingKeyError
from dicomlake.ingest.job import run_ingest
from dicomlake.keyring_file import save_keyring
from dicomlake.lake import schemas
from dicomlake.lake.identities import read_identities
from dicomlake.lake.paths import read_paths
from dicomlake.pixels import pack
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


def _name_part(value: object) -> str:
    """A header value as one folder or file name, as a PACS export writes it."""
    text = _text(value) or "none"
    return re.sub(r"[/\x00]", "_", text)[:120]


def _identified_name(path: Path, n: int) -> Path:
    """Where a PACS export puts a file: named after its patient, study and instance."""
    ds = _read(path)
    if ds is None or not ds.get("SOPInstanceUID"):
        return Path(f"f{n:04d}{path.suffix}")
    patient = f"{_name_part(ds.get('PatientName'))}-{_name_part(ds.get('PatientID'))}"
    study = _name_part(ds.get("StudyInstanceUID"))
    return Path(patient, study, f"{_name_part(ds.SOPInstanceUID)}-{n}.dcm")


@pytest.fixture(scope="module")
def phi_lake(tmp_path_factory, sc, config, keyring):
    """The whole sample corpus ingested with the default (de-identifying) config, from a
    landing zone whose folders and files are named after patients, studies and instances."""
    root = tmp_path_factory.mktemp("phi")
    samples, landing, lake = root / "samples", root / "landing", root / "lake"
    build_sample_landing(samples)
    for n, path in enumerate(sorted(p for p in samples.rglob("*") if p.is_file())):
        target = landing / _identified_name(path, n)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    run_ingest(sc, str(landing), str(lake), config, keyring)
    return landing, lake


def _rows(phi_lake, name: str, keyring) -> list[dict]:
    """A table's rows with the landing path each stands for (see `with_paths`)."""
    landing, lake = phi_lake
    files = [p for p in landing.rglob("*") if p.is_file()]
    return with_paths(table(lake, name).to_pylist(), keyring, files)


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


def _leaks(
    needles: dict[str, str], path: Path, root: Path, decode: bool, raw: bytes | None = None
) -> list[str]:
    """Where the identifying ``needles`` occur in the file at ``path``: in its raw bytes (or
    in ``raw``, those of them that are not proven ciphertext), and with ``decode`` (a plain
    Parquet file) in every value, statistic and metadata it holds."""
    raw = path.read_bytes() if raw is None else raw
    text = (_column_text(path) + "\n" + _metadata_text(path)).encode() if decode else b""
    found = []
    for value, where in needles.items():
        needle = value.encode()
        # A short run of digits turns up by chance in compressed or encrypted bytes: such
        # values are searched in what the file decodes to (values, statistics, metadata) only
        in_raw = (len(value) >= 8 or not value.isdigit()) and needle in raw
        pattern = _pattern(value)
        if (in_raw or needle in text) and (
            (in_raw and pattern.search(raw)) or pattern.search(text)
        ):
            found.append(f"{where}: {value!r} in {path.relative_to(root)}")
    return found


@pytest.fixture(scope="module")
def needles(originals) -> dict[str, str]:
    found = _identifying_values(originals)
    assert len(found) > 300  # the corpus has names, IDs, dates, many UIDs
    kinds = {where.split(" of ")[0] for where in found.values()}
    assert {"PatientName", "PatientID", "SOPInstanceUID", "StudyInstanceUID"} <= kinds
    return found


def test_landing_names_are_identifying(phi_lake, needles):
    """The landing zone itself names patients: what the lake must not repeat."""
    landing, _ = phi_lake
    names = {part for p in landing.rglob("*") for part in p.relative_to(landing).parts}
    named = {v for v in needles if any(v in name for name in names)}
    kinds = {needles[v].split(" of ")[0] for v in named}
    assert {"PatientID", "StudyInstanceUID", "SOPInstanceUID"} <= kinds
    assert len(named) > 100


def test_no_identifying_value_in_any_analyst_file(phi_lake, needles):
    _, lake = phi_lake
    files = sorted((lake / "tables").rglob("*.parquet"))
    assert {p.relative_to(lake / "tables").parts[0] for p in files} >= {
        "instances",
        "elements",
        "frames",
        "errors",
        "sources",
        "runs",
    }
    leaks = [leak for path in files for leak in _leaks(needles, path, lake, decode=True)]
    assert not leaks, "\n".join(leaks[:40])
    # no column of any table holds a landing path or a file name
    assert not [
        name for path in files for name in pq.read_schema(path).names if name == "source_path"
    ]


def test_quarantine_copies_are_encrypted(phi_lake, needles, keyring, config, tmp_path):
    _, lake = phi_lake
    copies = sorted((lake / "quarantine").rglob("*"))
    copies = [p for p in copies if p.is_file()]
    errors = _rows(phi_lake, "errors", keyring)
    assert len(copies) == sum(1 for r in errors if r["quarantine_path"]) > 5
    leaks = [leak for path in copies for leak in _leaks(needles, path, lake, decode=False)]
    assert not leaks, "\n".join(leaks[:40])
    for row in errors:
        # a copy is named by its error id, never after the landing file
        assert row["quarantine_path"] == f"quarantine/{row['ingest_run_id']}/{row['error_id']}.pack"
        for name in Path(row["source_path"]).parts[-3:]:
            assert name not in row["message"] and name not in row["quarantine_path"]
        original = Path(row["source_path"]).read_bytes()
        if len(original) > 256:  # a window of the file's own bytes is not in its copy
            middle = len(original) // 2
            assert (
                original[middle : middle + 48] not in (lake / row["quarantine_path"]).read_bytes()
            )
    row = next(r for r in errors if r["quarantine_path"])
    code = main(
        [
            "quarantine",
            "get",
            "--lake",
            str(lake),
            "--error-id",
            row["error_id"],
            "--out",
            str(tmp_path / "copy"),
            "--keyring",
            str(_saved(keyring, tmp_path, config)),
        ]
    )
    assert code == 0
    assert (tmp_path / "copy").read_bytes() == Path(row["source_path"]).read_bytes()


def _saved(keyring: Keyring, tmp_path: Path, config) -> Path:
    path = tmp_path / f"keyring-{keyring.active_kek_id}-{keyring.can_unwrap}.json"
    save_keyring(str(path), keyring, config)
    return path


def test_backup_holds_no_identifying_value(phi_lake, needles, sc, config, keyring, tmp_path):
    _, lake = phi_lake
    backup = tmp_path / "backup"
    take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=config, sc=sc)
    # the quarantine copies are packs: a deep verify opens them with the pixel packs
    packs = list(lake.glob("pixels/**/*.pack")) + list(lake.glob("quarantine/**/*.pack"))
    checked = verify(str(backup), None, deep=True, keyring=keyring, config=config)
    assert checked.ok and checked.packs_checked == len(packs)
    files = [p for p in sorted(backup.rglob("*")) if p.is_file()]
    assert len(files) > 50
    leaks = []
    for path in files:
        plain_parquet = path.suffix == ".parquet"  # the snapshot's manifest
        data = path.read_bytes()
        # A pack past its clear header is AES-GCM ciphertext whose every chunk and index the
        # deep verify above opened; a 4-letter name turns up in such bytes by chance (once
        # in 4 GiB for each name: a 17 MB pack held 'MARY')
        if data.startswith(pack.MAGIC):
            data = data[: pack.read_header(data).data_start]
        leaks += _leaks(needles, path, backup, decode=plain_parquet, raw=data)
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
    for row in _rows(phi_lake, "instances", keyring):
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


def _expected_identities(originals, rows: list[dict]) -> dict[str, dict[str, str | None]]:
    out = {}
    for row in rows:
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
        if row["sop_uid_from_meta"]:  # named by the file meta, as DCMTK reads it
            meta_uid = _text(ds.file_meta.get("MediaStorageSOPInstanceUID"))
            out[row["instance_id"]]["original_SOPInstanceUID"] = meta_uid
        out[row["instance_id"]]["SOPInstanceUID"] = row["SOPInstanceUID"]
    return out


def test_restricted_table_with_key_pyarrow(phi_lake, originals, config, keyring):
    _, lake = phi_lake
    expected = _expected_identities(originals, _rows(phi_lake, "instances", keyring))
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
    expected = _expected_identities(originals, _rows(phi_lake, "instances", keyring))
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
    row = next(r for r in _rows(phi_lake, "instances", keyring) if r["source_path"] in originals)
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
    assert not (lake / "restricted" / "identities").exists()
    # landing paths are pseudonymised all the same: headers keep their values on request, but
    # a path's names are not part of what the option keeps
    assert list((lake / "restricted" / "paths").glob("*.parquet"))
    assert json.loads(table(lake, "runs").to_pylist()[0]["deid_options"]) == {"enabled": False}
    elements = table(lake, "elements")
    assert any(elements.column("private_creator").to_pylist())
    files = [p for p in landing.rglob("*") if p.is_file()]
    for row in with_paths(table(lake, "instances").to_pylist(), keyring, files):
        ds = _read(Path(row["source_path"]))
        if ds is not None and _text(ds.get("SOPInstanceUID")):
            assert row["SOPInstanceUID"] == _text(ds.SOPInstanceUID)


def _command_rows(capsys, argv: list[str]) -> tuple[int, list[dict]]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_reidentify_gives_landing_paths_back(phi_lake, keyring, config, spark, tmp_path, capsys):
    landing, lake = phi_lake
    ring = str(_saved(keyring, tmp_path, config))
    common = ["reidentify", "--lake", str(lake), "--keyring", ring]
    instance = next(r for r in _rows(phi_lake, "instances", keyring) if "/" in r["source_path"])
    code, rows = _command_rows(capsys, [*common, "--path-id", instance["source_path_id"]])
    assert code == 0
    assert rows[0]["source_path"] == instance["source_path"]
    assert Path(instance["source_path"]).parent.parent.parent == landing
    # an instance: every landing file with its content (duplicates included)
    expected = {
        r["source_path"]
        for r in _rows(phi_lake, "sources", keyring)
        if r["instance_id"] == instance["instance_id"]
    }
    code, rows = _command_rows(capsys, [*common, "--instance-id", instance["instance_id"]])
    assert code == 0 and {r["source_path"] for r in rows[:-1]} == expected
    error = _rows(phi_lake, "errors", keyring)[0]
    code, rows = _command_rows(capsys, [*common, "--error-id", error["error_id"]])
    assert code == 0 and rows[0]["source_path"] == error["source_path"]
    # every path of the lake is in the restricted table, under its id
    secret = keyring.secret_for("pseudonym")
    every = read_paths(str(lake), keyring, config)
    files = [str(p) for p in landing.rglob("*") if p.is_file()]
    assert every == {ref_path_id(secret, f): f for f in [str(landing), *files]}
    # Spark reads it as it reads the identities (the KMS jar on its classpath)
    df = spark.read.options(**kms.spark_options(keyring)).parquet(str(lake / "restricted/paths"))
    assert dict(df.select("source_path_id", "source_path").collect()) == every


def test_a_landing_zone_named_after_a_patient_is_named_by_its_id(
    phi_lake, sc, config, keyring, tmp_path, capsys
):
    """A landing zone of its own per patient or study (a folder per import): the runs table
    names it by its path id, and its filesystem; reidentify gives the path back."""
    landing, _ = phi_lake
    root = tmp_path / "DOE^JANE_19650412-MRN77654033"
    root.mkdir()
    for path in sorted(landing.rglob("*.dcm"))[:3]:
        shutil.copy(path, root / path.name)
    lake = tmp_path / "lake"
    summary = run_ingest(sc, str(root), str(lake), config, keyring).as_dict()
    (run,) = table(lake, "runs").to_pylist()
    assert run["landing"] == "file"
    assert run["landing_path_id"] == ref_path_id(keyring.secret_for("pseudonym"), str(root))
    # so does the summary a scheduler logs
    assert (summary["landing"], summary["landing_path_id"]) == ("file", run["landing_path_id"])
    assert "DOE^JANE" not in json.dumps(summary) and "77654033" not in json.dumps(summary)
    for path in (lake / "tables").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"DOE^JANE" not in data and b"77654033" not in data, path
    ring = str(_saved(keyring, tmp_path, config))
    command = ["reidentify", "--lake", str(lake), "--keyring", ring]
    code, rows = _command_rows(capsys, [*command, "--path-id", run["landing_path_id"]])
    assert code == 0 and rows[0]["source_path"] == str(root)


@pytest.fixture(scope="module")
def x25519_lake(phi_lake, tmp_path_factory, sc, config):
    """A few identified landing files and a bad one, ingested with an x25519 keyring."""
    landing, _ = phi_lake
    root = tmp_path_factory.mktemp("x25519")
    sub = root / "landing"
    for path in sorted(landing.rglob("*.dcm"))[:4]:
        target = sub / path.relative_to(landing)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    (sub / "Doe^Jane-77654033").mkdir()
    (sub / "Doe^Jane-77654033" / "1.2.840.99999.1.dcm").write_bytes(b"not dicom " * 50)
    keyring = Keyring.generate("x25519")
    run_ingest(sc, str(sub), str(root / "lake"), config, keyring)
    return sub, root / "lake", keyring


def test_public_keyring_cannot_get_quarantine_copies(x25519_lake, config, tmp_path, capsys):
    """Ingest hosts hold the public half: enough to seal a copy, not to open it."""
    landing, lake, keyring = x25519_lake
    files = [p for p in landing.rglob("*") if p.is_file()]
    [error] = with_paths(table(lake, "errors").to_pylist(), keyring, files)
    assert error["source_path"].endswith("1.2.840.99999.1.dcm")
    get = ["quarantine", "get", "--lake", str(lake), "--error-id", error["error_id"]]
    private = str(_saved(keyring, tmp_path, config))
    code, _ = _command_rows(capsys, [*get, "--out", str(tmp_path / "a"), "--keyring", private])
    assert code == 0 and (tmp_path / "a").read_bytes() == b"not dicom " * 50
    public = str(_saved(keyring.public_only(), tmp_path, config))
    code, _ = _command_rows(capsys, [*get, "--out", str(tmp_path / "b"), "--keyring", public])
    assert code == 1 and not (tmp_path / "b").exists()


def test_public_keyring_cannot_find_landing_paths(x25519_lake, config, tmp_path, capsys):
    """The path ids of the tables lead back to paths with the private keyring only: the
    restricted table's encrypted column needs a key the public half cannot unwrap."""
    landing, lake, keyring = x25519_lake
    files = [p for p in landing.rglob("*") if p.is_file()]
    [error] = with_paths(table(lake, "errors").to_pylist(), keyring, files)
    by_error = ["reidentify", "--lake", str(lake), "--error-id", error["error_id"]]
    private = str(_saved(keyring, tmp_path, config))
    code, rows = _command_rows(capsys, [*by_error, "--keyring", private])
    assert code == 0 and rows[0]["source_path"] == error["source_path"]
    public = str(_saved(keyring.public_only(), tmp_path, config))
    code, rows = _command_rows(capsys, [*by_error, "--keyring", public])
    assert code == 1 and [row["exit_code"] for row in rows] == [1]  # the error's line alone
    assert "source_path" not in rows[0] and "needs the full keyring" in rows[0]["error"]
