"""The ingest job on the embedded default (local filesystem, Spark local[2]), real DICOM files."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pydicom
import pytest
from deltalake import DeltaTable
from ingest_helpers import landing_files, ref_text, ref_uid, sha256_file, table, with_paths
from pydicom.multival import MultiValue

from dicomlake.ingest.job import run_ingest
from dicomlake.lake.export import export_instances, version_key
from dicomlake.lake.pixelstore import PixelStore
from dicomlake.lake.quarantine import get_copy
from dicomlake.samples import build_sample_landing, sample_files

pytestmark = [
    pytest.mark.spark,
    # pydicom warns when the test's own reading meets odd values (a UI holding a hash).
    pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning"),
    # Bulk data is left out of the JSON on purpose (it lives in the pixel store).
    pytest.mark.filterwarnings("ignore:No bulk data URI handler:UserWarning"),
]


@pytest.fixture(scope="module", params=["whole", "streamed"])
def ingest_mode(request) -> str:
    """How the corpus is ingested: each file held whole (the default config), or every file
    over 4 KiB streamed, into 1 MiB packs, so that big instances span several packs."""
    return request.param


STREAM_BYTES = 4096  # "streamed": every file over this


@pytest.fixture(scope="module")
def corpus_lake(tmp_path_factory, sc, config, keyring, ingest_mode):
    """The whole sample corpus ingested once: (landing, lake, summary)."""
    root = tmp_path_factory.mktemp("corpus")
    landing, lake = root / "landing", root / "lake"
    build_sample_landing(landing)
    if ingest_mode == "streamed":
        config = dataclasses.replace(
            config,
            ingest=dataclasses.replace(config.ingest, stream_bytes=STREAM_BYTES),
            pixels=dataclasses.replace(config.pixels, pack_bytes=1 << 20),
        )
    summary = run_ingest(sc, str(landing), str(lake), config, keyring)
    return landing, lake, summary


def _read(path: Path) -> pydicom.Dataset | None:
    """pydicom's own reading of a file, or None when pydicom refuses it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            return None


def _rows(lake: Path, name: str, landing: Path, keyring) -> list[dict]:
    """A table's rows, each with the landing path its source_path_id stands for."""
    return with_paths(table(lake, name).to_pylist(), keyring, landing_files(landing))


def test_every_file_accounted_for_once(corpus_lake, keyring):
    landing, lake, summary = corpus_lake
    files = landing_files(landing)
    sources = _rows(lake, "sources", landing, keyring)
    assert sorted(r["source_path"] for r in sources) == sorted(files)
    instances = {r["source_path"] for r in _rows(lake, "instances", landing, keyring)}
    errors = {r["source_path"] for r in _rows(lake, "errors", landing, keyring)}
    duplicates = {r["source_path"] for r in sources if r["outcome"] == "duplicate"}
    assert not instances & errors
    assert instances | errors | duplicates == set(files)
    assert len(instances) + len(errors) + len(duplicates) == len(files)
    assert summary.ingested == len(instances) and summary.quarantined == len(errors)
    # Every duplicate's content is stored exactly once under another path.
    stored_sha = [r["source_sha256"] for r in table(lake, "instances").to_pylist()]
    assert len(stored_sha) == len(set(stored_sha))
    for path in duplicates:
        assert sha256_file(files[path]) in set(stored_sha)


def test_non_dicom_files_are_quarantined_with_a_copy(corpus_lake, config, keyring, tmp_path):
    landing, lake, _ = corpus_lake
    errors = {r["source_path"]: r for r in _rows(lake, "errors", landing, keyring)}
    for path, file in landing_files(landing).items():
        if file.suffix in (".zip", ".md", ".txt"):
            assert errors[path]["reason"] == "not_dicom", path
    for n, row in enumerate(errors.values()):
        out = tmp_path / f"copy-{n}"
        get_copy(str(lake), keyring, config, row["error_id"], out)
        assert out.read_bytes() == Path(row["source_path"]).read_bytes()
        assert stat.S_IMODE(out.stat().st_mode) == 0o600  # the landing file as it came: PHI
    assert {p.name for p in tmp_path.iterdir()} == {f"copy-{n}" for n in range(len(errors))}


def _expected(ds: pydicom.Dataset, keyword: str, secret: bytes) -> str | None:
    """The promoted value of ``keyword``: pydicom's reading, pseudonymised where deid does."""
    value = ds.get(keyword)
    if keyword == "SOPInstanceUID" and not value:  # named by the file meta (as DCMTK reads it)
        value = ds.file_meta.get("MediaStorageSOPInstanceUID")
    values = list(value) if isinstance(value, MultiValue) else [value]
    values = [str(v).strip(" \x00") for v in values if v not in (None, "")]
    values = [v for v in values if v]
    if keyword.endswith("UID"):
        values = [ref_uid(secret, v) for v in values]
    elif keyword in ("PatientID", "AccessionNumber"):
        values = [ref_text(secret, keyword, v) for v in values]
    # DICOM's own multi-value separator
    return "\\".join(values) or None


def test_promoted_values_equal_pydicoms_reading(corpus_lake, keyring):
    landing, lake, _ = corpus_lake
    secret = keyring.secret_for("pseudonym")
    rows = _rows(lake, "instances", landing, keyring)
    assert rows
    checked = 0
    for row in rows:
        ds = _read(Path(row["source_path"]))
        if ds is None:
            continue
        for keyword in (
            "SOPInstanceUID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "PatientID",
            "Modality",
            "AccessionNumber",
        ):
            assert row[keyword] == _expected(ds, keyword, secret), (row["source_path"], keyword)
        for keyword in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"):
            expected = ds.get(keyword)
            assert row[keyword] == (None if expected is None else int(expected))
        if "PixelSpacing" in ds and ds.PixelSpacing:
            assert row["PixelSpacing"] == pytest.approx([float(v) for v in ds.PixelSpacing])
        if ds.get("StudyDate") and len(str(ds.StudyDate)) == 8:
            assert row["StudyDate"].strftime("%Y%m%d") == str(ds.StudyDate)
        checked += 1
    assert checked >= 150


def test_dicom_json_round_trips(corpus_lake, keyring):
    landing, lake, _ = corpus_lake
    secret = keyring.secret_for("pseudonym")
    for row in _rows(lake, "instances", landing, keyring):
        with warnings.catch_warnings():  # pydicom validates values as it rebuilds them
            warnings.simplefilter("ignore")
            rebuilt = pydicom.Dataset.from_json(row["header_json"])
        original = _read(Path(row["source_path"]))
        if row["sop_uid_from_meta"]:  # no SOPInstanceUID in the file, none in its header
            assert "SOPInstanceUID" not in original and "SOPInstanceUID" not in rebuilt
            assert row["SOPInstanceUID"] == ref_uid(
                secret, original.file_meta.MediaStorageSOPInstanceUID
            )
        else:
            assert rebuilt.SOPInstanceUID == ref_uid(secret, original.SOPInstanceUID)
        assert not rebuilt.get("PatientName")  # de-identified: emptied (Z)
        assert rebuilt.PatientIdentityRemoved == "YES"
        assert rebuilt.get("Modality") == original.get("Modality")


def test_tables_readable_by_duckdb_and_pandas(corpus_lake, keyring):
    landing, lake, _ = corpus_lake
    n_arrow = table(lake, "instances").num_rows
    con = duckdb.connect()
    # DuckDB queries the Arrow dataset of the table's current snapshot (offline, no extension).
    instances = DeltaTable(str(lake / "tables" / "instances")).to_pyarrow_dataset()  # noqa: F841
    n_duck = con.execute("select count(*) from instances").fetchone()[0]
    assert n_duck == n_arrow
    by_modality = dict(
        con.execute("select Modality, count(*) from instances group by all").fetchall()
    )
    # Modality is not pseudonymised: pydicom's reading of the source files gives the counts.
    expected: dict[str | None, int] = {}
    for row in _rows(lake, "instances", landing, keyring):
        modality = _read(Path(row["source_path"])).get("Modality") or None
        expected[modality] = expected.get(modality, 0) + 1
    assert by_modality == expected
    frames = DeltaTable(str(lake / "tables" / "frames")).to_pandas()
    assert set(frames["chunk_kind"]) <= {"prefix", "frame", "suffix"}
    elements = DeltaTable(str(lake / "tables" / "elements")).to_pandas()
    assert (elements.groupby("instance_id").size() > 5).all()


def test_spark_sql_reads_the_delta_tables(corpus_lake, spark):
    _, lake, summary = corpus_lake
    instances = spark.read.format("delta").load(str(lake / "tables" / "instances"))
    assert instances.count() == table(lake, "instances").num_rows == summary.ingested
    by_modality = {
        r["Modality"]: r["count"] for r in instances.groupBy("Modality").count().collect()
    }
    assert by_modality == dict(Counter(table(lake, "instances")["Modality"].to_pylist()))
    # The table as of its first version (created, no run yet) and its history of commits.
    path = lake / "tables" / "runs"
    assert spark.sql(f"select * from delta.`{path}` version as of 0").count() == 0
    history = spark.sql(f"describe history delta.`{path}`").collect()
    assert [h["operation"] for h in sorted(history, key=lambda h: h["version"])] == [
        "CREATE TABLE",
        "WRITE",
    ]


def test_elements_hold_nested_and_private_tags(corpus_lake):
    _, lake, _ = corpus_lake
    elements = table(lake, "elements")
    depth = elements.column("depth").to_pylist()
    assert max(depth) >= 1
    # De-identified: private tags are gone but for the safe list (test_phi.py covers a lake
    # without de-identification, where they are all kept).
    creators = {t for t in elements.column("private_creator").to_pylist() if t}
    assert creators <= {"SIEMENS MR HEADER", "GEMS_PARM_01"}


def test_export_is_byte_exact(corpus_lake, config, keyring, tmp_path):
    landing, lake, _ = corpus_lake
    instances = _rows(lake, "instances", landing, keyring)
    studies = sorted({r["StudyInstanceUID"] for r in instances if r["StudyInstanceUID"]})
    selections = [{"study": s} for s in studies] + [
        {"sop": r["SOPInstanceUID"]} for r in instances if not r["StudyInstanceUID"]
    ]
    exported = {}
    for n, selection in enumerate(selections):
        out = tmp_path / str(n)
        export_instances(str(lake), keyring, config, out, **selection)
        exported.update({p.name: sha256_file(p) for p in out.iterdir()})
    # The latest version of every SOP UID comes back as its original file, byte for byte.
    latest = {}
    for row in sorted(instances, key=version_key):
        latest[row["SOPInstanceUID"]] = sha256_file(Path(row["source_path"]))
    assert exported == {f"{sop}.dcm": sha for sop, sha in latest.items()}


def test_chunks_name_their_own_pack_and_instances_their_prefixs(corpus_lake, ingest_mode):
    _, lake, _ = corpus_lake
    pack_sizes = {
        p.relative_to(lake).as_posix(): p.stat().st_size for p in lake.glob("pixels/**/*.pack")
    }
    packs_of, prefix_pack = defaultdict(set), {}
    for row in table(lake, "frames").to_pylist():
        assert row["offset"] + row["length"] <= pack_sizes[row["pack_path"]]
        packs_of[row["instance_id"]].add(row["pack_path"])
        if row["chunk_kind"] == "prefix":
            prefix_pack[row["instance_id"]] = row["pack_path"]
    instances = table(lake, "instances").to_pylist()
    assert {r["instance_id"]: r["pack_path"] for r in instances} == prefix_pack
    # Held whole, an instance goes into one pack; streamed, a big one rolls over into the next
    spanning = [i for i, packs in packs_of.items() if len(packs) > 1]
    assert bool(spanning) == (ingest_mode == "streamed")


def test_frames_decode_to_pydicoms_pixels(corpus_lake, config, keyring):
    landing, lake, _ = corpus_lake
    store = PixelStore(str(lake), keyring, config)
    compared = 0
    for row in _rows(lake, "instances", landing, keyring):
        if not row["frame_chunks"]:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                expected = pydicom.dcmread(row["source_path"]).pixel_array
            except Exception:
                continue
        n = row["NumberOfFrames"] or 1
        for frame in sorted({1, n}):
            want = expected if n == 1 else expected[frame - 1]
            got = store.frame(row["instance_id"], frame)
            np.testing.assert_array_equal(got, want, err_msg=row["source_path"])
        compared += 1
    assert compared >= 100


def test_packs_hold_nothing_in_clear(corpus_lake, keyring):
    landing, lake, _ = corpus_lake
    packs = b"".join(p.read_bytes() for p in (lake / "pixels").rglob("*.pack"))
    assert packs
    for row in _rows(lake, "instances", landing, keyring)[:60]:
        original = Path(row["source_path"]).read_bytes()
        ds = _read(Path(row["source_path"]))
        needles = [ds.get(k) for k in ("SOPInstanceUID", "PatientID", "StudyInstanceUID")]
        for needle in needles if ds is not None else []:
            if needle and len(str(needle)) >= 8:
                assert str(needle).encode() not in packs, needle
        # 32-byte windows from the middle of the file (pixel data for images).
        middle = len(original) // 2
        window = original[middle : middle + 32]
        if len(set(window)) > 4:
            assert window not in packs, row["source_path"]


def test_rerun_is_exactly_once(tmp_path, sc, config, keyring):
    files = [p for _, p in sample_files() if p.suffix == ".dcm"][:12]
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    for p in files[:10]:
        shutil.copy(p, landing / p.name)
    first = run_ingest(sc, str(landing), str(lake), config, keyring)
    assert first.files_seen == 10
    # The same places spelled otherwise are the same places
    again = run_ingest(sc, f"file://{landing}/", f"{lake}/.", config, keyring)
    assert again.files_seen == 0 and again.ingested == 0
    # A new file, the same content under another path, and a changed file.
    shutil.copy(files[10], landing / "new.dcm")
    (landing / "sub").mkdir()
    shutil.copy(files[0], landing / "sub" / "copy-of-first")
    shutil.copy(files[11], landing / files[1].name)  # same path, new content
    third = run_ingest(sc, str(landing), str(lake), config, keyring)
    assert (third.files_seen, third.ingested, third.duplicates) == (3, 2, 1)
    sources = _rows(lake, "sources", landing, keyring)
    dup = [r for r in sources if r["source_path"].endswith("copy-of-first")]
    assert dup[0]["outcome"] == "duplicate"
    assert dup[0]["source_sha256"] == sha256_file(files[0])
    instances = _rows(lake, "instances", landing, keyring)
    versions = [r for r in instances if r["source_path"] == str(landing / files[1].name)]
    assert sorted(r["source_sha256"] for r in versions) == sorted(
        [sha256_file(files[1]), sha256_file(files[11])]
    )
    runs = table(lake, "runs").to_pylist()
    assert len(runs) == 2
    assert sum(r["ingested"] for r in runs) == len(instances) == 12


def test_summary_numbers_match_the_landing_zone_and_the_lake(corpus_lake, ingest_mode, keyring):
    landing, lake, summary = corpus_lake
    data = json.loads(json.dumps(summary.as_dict(), default=str))
    files = landing_files(landing)
    sources = table(lake, "sources").to_pylist()
    assert data["files_listed"] == data["files_seen"] == len(files)
    sizes = {uri: p.stat().st_size for uri, p in files.items()}
    if ingest_mode == "streamed":  # a streamed file refused on its header is not read through
        kept = {
            r["source_path"]
            for r in _rows(lake, "sources", landing, keyring)
            if r["outcome"] in ("ingested", "duplicate")
        }
        sizes = {uri: n for uri, n in sizes.items() if n <= STREAM_BYTES or uri in kept}
    assert data["bytes_read"] == sum(sizes.values())
    assert data["ingested"] == table(lake, "instances").num_rows
    assert data["quarantined"] == table(lake, "errors").num_rows
    assert data["duplicates"] == sum(r["outcome"] == "duplicate" for r in sources)
    assert data["packs_written"] == len(list(lake.glob("pixels/**/*.pack")))
    # Chunks of a duplicate stored by two tasks stay in their pack, unreferenced.
    referenced = sum(r["length"] for r in table(lake, "frames").to_pylist())
    pack_bytes = sum(p.stat().st_size for p in lake.glob("pixels/**/*.pack"))
    assert referenced <= data["bytes_stored"] < pack_bytes
    # every phase of the driver and every stage of a task is timed
    stages = data["stage_seconds"]
    assert {"list", "tasks", "dedupe", "commit", "task.read", "task.parse"} <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values())
    assert stages["tasks"] <= data["seconds"]


def test_a_pack_holding_only_another_tasks_duplicates_is_not_published(
    tmp_path, sc, config, keyring
):
    """One content under several names, each name in a task of its own: one task's copy is
    kept, and a pack that holds nothing but the others' copies is not published."""
    same, other = [p for _, p in sample_files() if p.suffix == ".dcm"][:2]
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    for n in range(4):
        shutil.copy(same, landing / f"copy-{n}.dcm")
    shutil.copy(other, landing / "other.dcm")
    small = dataclasses.replace(config, ingest=dataclasses.replace(config.ingest, task_bytes=1))
    summary = run_ingest(sc, str(landing), str(lake), small, keyring)
    assert (summary.ingested, summary.duplicates) == (2, 3)
    on_disk = {p.relative_to(lake).as_posix() for p in (lake / "pixels").rglob("*.pack")}
    packs = {r["pack_path"] for r in table(lake, "packs").to_pylist()}
    held = {r["pack_path"] for r in table(lake, "frames").to_pylist()}
    assert on_disk == packs == held
    assert summary.packs_written == len(on_disk) <= 2
