"""Arrow schemas of the lake's tables.

Promoted DICOM attributes keep their keywords as column names; lake bookkeeping columns are
snake_case. ``instances`` is partitioned by ``Modality`` and ``study_year`` (hive style), so those
two columns live in the directory names, not in the files.
"""

from __future__ import annotations

import pyarrow as pa

from dicomlake.dicom.deid import IDENTITY_KEYWORDS, PSEUDONYM_KEYWORDS
from dicomlake.dicom.elements import ELEMENT_SCHEMA
from dicomlake.dicom.promote import PROMOTED

TS = pa.timestamp("ms", tz="UTC")

INSTANCE_PARTITIONS = ("Modality", "study_year")
# Hive's name for a null partition value; Spark, pyarrow and DuckDB read it back as null.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# Modality's defined terms (PS3.3 C.7.3.1.1.1), retired ones included: the only values that
# name a partition directory
MODALITIES = frozenset(
    """ANN AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DG DMS DOC DX ECG EEG EMG EOG EPS ES FID
    GM HC HD IO IOL IVOCT IVUS KER KO LEN LS M3D MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV
    OSS OT PA PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD
    RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC
    AS CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF""".split()  # noqa: SIM905
)


def partition_text(value: object) -> str | None:
    """Modality as ``instances`` keeps it: the value when it is one of the standard's defined
    terms, else None (the null partition). The value names a directory, which a hostile or
    careless header must not name after a patient (``DOE JANE`` is a valid code string), nor
    make too long for the file system or fill with the elements a bad length swallowed."""
    return value if isinstance(value, str) and value in MODALITIES else None


LINEAGE = [
    pa.field("instance_id", pa.string(), nullable=False),  # sha256 of the source bytes
    # Keyed pseudonym of the landing path (lake.paths.path_id); the path itself is in
    # restricted/paths, since landing folders and files are often named after patients.
    pa.field("source_path_id", pa.string(), nullable=False),
    pa.field("source_size", pa.int64(), nullable=False),
    pa.field("source_mtime", TS, nullable=False),
    pa.field("source_sha256", pa.string(), nullable=False),
    pa.field("ingest_run_id", pa.string(), nullable=False),
    pa.field("ingested_at", TS, nullable=False),
]

INSTANCES = pa.schema(
    list(PROMOTED)
    + [
        pa.field("study_year", pa.int32()),
        pa.field("header_json", pa.string()),
        # The pack of the prefix chunk; a streamed instance's frames may go on in later packs
        # (each frames row names its own pack).
        pa.field("pack_path", pa.string()),
        pa.field("frame_chunks", pa.int32()),
        pa.field("pixel_codec", pa.string()),
        pa.field("raw_pixel_bytes", pa.int64()),
        pa.field("stored_pixel_bytes", pa.int64()),
        pa.field("stored_bytes", pa.int64()),
    ]
    + LINEAGE
    # True when the dataset has no SOPInstanceUID (0008,0018) and the instance is named by the
    # file meta's MediaStorageSOPInstanceUID (0002,0003); null in rows written before
    + [pa.field("sop_uid_from_meta", pa.bool_())]
)

# One row per stored chunk: the header bytes before the pixels ("prefix"), every frame, and the
# bytes after them ("suffix"), so an instance is rebuilt as prefix + frames + suffix.
FRAMES = pa.schema(
    [
        pa.field("instance_id", pa.string(), nullable=False),
        pa.field("SOPInstanceUID", pa.string()),
        pa.field("chunk_kind", pa.string(), nullable=False),
        pa.field("frame_number", pa.int32(), nullable=False),
        pa.field("pack_path", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("codec", pa.string(), nullable=False),
        pa.field("kek_id", pa.string(), nullable=False),
        pa.field("raw_length", pa.int64(), nullable=False),
        pa.field("raw_sha256", pa.string(), nullable=False),
        pa.field("ingest_run_id", pa.string(), nullable=False),
    ]
)

ELEMENTS = pa.schema(
    [pa.field("instance_id", pa.string(), nullable=False), pa.field("SOPInstanceUID", pa.string())]
    + list(ELEMENT_SCHEMA)
    + [pa.field("ingest_run_id", pa.string(), nullable=False)]
)

ERRORS = pa.schema(
    [
        pa.field("error_id", pa.string(), nullable=False),  # random; names the quarantine copy
        pa.field("source_path_id", pa.string(), nullable=False),
        pa.field("source_size", pa.int64(), nullable=False),
        pa.field("source_mtime", TS, nullable=False),
        pa.field("source_sha256", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        # Names tags, offsets, lengths and limits, never a value or the landing path.
        pa.field("message", pa.string(), nullable=False),
        # quarantine/<run>/<error_id>.pack, encrypted; null when no copy was kept (unreadable,
        # or over ingest.quarantine_max_bytes).
        pa.field("quarantine_path", pa.string()),
        pa.field("ingest_run_id", pa.string(), nullable=False),
        pa.field("recorded_at", TS, nullable=False),
    ]
)

SOURCES = pa.schema(
    [
        pa.field("source_path_id", pa.string(), nullable=False),
        pa.field("source_size", pa.int64(), nullable=False),
        pa.field("source_mtime", TS, nullable=False),
        pa.field("source_sha256", pa.string()),
        # ingested | duplicate | quarantined | failed (tried again next run) | skipped (not read)
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("instance_id", pa.string()),  # the stored instance this file's content is
        pa.field("SOPInstanceUID", pa.string()),
        pa.field("ingest_run_id", pa.string(), nullable=False),
        pa.field("seen_at", TS, nullable=False),
    ]
)

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("landing", pa.string(), nullable=False),
        pa.field("started_at", TS, nullable=False),
        pa.field("committed_at", TS, nullable=False),
        pa.field("files_listed", pa.int64(), nullable=False),
        pa.field("files_seen", pa.int64(), nullable=False),
        pa.field("ingested", pa.int64(), nullable=False),
        pa.field("duplicates", pa.int64(), nullable=False),
        pa.field("quarantined", pa.int64(), nullable=False),
        pa.field("bytes_read", pa.int64(), nullable=False),
        pa.field("bytes_stored", pa.int64(), nullable=False),
        pa.field("packs_written", pa.int64(), nullable=False),
        # Highest source mtime this run saw, by the landing filesystem's clock.
        pa.field("watermark", TS),
        pa.field("dicomlake_version", pa.string(), nullable=False),
        # The de-identification options of the run as JSON (dicom.deid.options_json), or
        # {"enabled": false}; null for runs before de-identification existed.
        pa.field("deid_options", pa.string()),
        # The rest of the run's count (files_seen = ingested + duplicates + quarantined +
        # failed + skipped), and the listed names it left alone; null for runs before these.
        pa.field("failed", pa.int64()),
        pa.field("skipped", pa.int64()),
        pa.field("files_hidden", pa.int64()),
        pa.field("files_settling", pa.int64()),
        # The landing zone's path id (`lake.paths`; its path is in restricted/paths); since
        # then `landing` holds only its filesystem (``file``, ``hdfs://nn``), null before
        pa.field("landing_path_id", pa.string()),
    ]
)

# Wrapped data key of every pack (pixel packs and quarantine copies); rewritten on key rotation
# (packs themselves never change).
PACKS = pa.schema(
    [
        pa.field("pack_path", pa.string(), nullable=False),
        pa.field("pack_id", pa.string(), nullable=False),
        pa.field("kek_id", pa.string(), nullable=False),
        pa.field("wrapped_key", pa.binary(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("chunks", pa.int64(), nullable=False),
        pa.field("ingest_run_id", pa.string(), nullable=False),
        pa.field("wrapped_at", TS, nullable=False),
    ]
)

# The restricted table <lake>/restricted/identities/ (outside tables/, so no analyst glob reads
# it): one row per ingested instance. The pseudonyms and bookkeeping columns are in clear; the
# identified ``original_*`` columns and ``date_shift_days`` are encrypted with Parquet Modular
# Encryption (`IDENTITY_ENCRYPTED`), under a plaintext footer. Not in SCHEMAS on purpose.
IDENTITY_CLEAR = ["instance_id", *PSEUDONYM_KEYWORDS, "ingest_run_id", "ingested_at"]
IDENTITY_ENCRYPTED = ["date_shift_days", *(f"original_{kw}" for kw in IDENTITY_KEYWORDS)]
IDENTITY_ENCRYPTED.append("original_uids")  # JSON object: pseudonym -> original, every UID
IDENTITIES = pa.schema(
    [
        pa.field("instance_id", pa.string(), nullable=False),
        *(pa.field(kw, pa.string()) for kw in PSEUDONYM_KEYWORDS),
        pa.field("ingest_run_id", pa.string(), nullable=False),
        pa.field("ingested_at", TS, nullable=False),
        pa.field("date_shift_days", pa.int32(), nullable=False),
        *(pa.field(f"original_{kw}", pa.string()) for kw in IDENTITY_KEYWORDS),
        pa.field("original_uids", pa.string(), nullable=False),
    ]
)
assert IDENTITIES.names == IDENTITY_CLEAR + IDENTITY_ENCRYPTED

# The restricted table <lake>/restricted/paths/: the landing path behind every source_path_id
# of the lake, one row per (task, path seen). ``source_path`` is encrypted (PME) like the
# identified columns of IDENTITIES; the id and the run are in clear.
PATH_CLEAR = ["source_path_id", "ingest_run_id"]
PATH_ENCRYPTED = ["source_path"]
PATHS = pa.schema(
    [
        pa.field("source_path_id", pa.string(), nullable=False),
        pa.field("ingest_run_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
    ]
)
assert PATHS.names == PATH_CLEAR + PATH_ENCRYPTED

SCHEMAS = {
    "instances": INSTANCES,
    "frames": FRAMES,
    "elements": ELEMENTS,
    "errors": ERRORS,
    "sources": SOURCES,
    "runs": RUNS,
    "packs": PACKS,
}
