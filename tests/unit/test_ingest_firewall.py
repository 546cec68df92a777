"""One landing file never stops a task: whatever goes wrong with it becomes its errors row, and
the files after it are ingested. Only the lake failing stops the task.

The tasks run here without Spark (`process_task` is what each Spark task calls), on real files.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import io
import struct
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from hostile_corpus import _deflate_bomb, _sequence
from pydicom.data import get_testdata_file

from dicomlake.errors import LakeWriteError
from dicomlake.ingest import worker
from dicomlake.ingest.worker import TaskContext, TaskResult, process_task
from dicomlake.lake.restricted import read_rows
from dicomlake.storage import FileInfo
from dicomlake.storage.local import LocalFileSystem

CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))


def _run(tmp_path: Path, config, keyring, files: list[FileInfo], lake: Path | None = None):
    ctx = TaskContext(
        run_id="r1",
        lake=str(lake or tmp_path / "lake"),
        config=config,
        keyring=keyring.to_bytes(),
        started_ms=1_700_000_000_000,
    )
    return process_task(0, 0, files, str(tmp_path / "landing"), ctx, frozenset())


def _put(tmp_path: Path, name: str, data: bytes, listed_size: int | None = None) -> FileInfo:
    path = tmp_path / "landing" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return FileInfo(str(path), len(data) if listed_size is None else listed_size, 1_000)


def _outcomes(result: TaskResult, files: list[FileInfo]) -> dict[str, tuple[str, str | None]]:
    """File name -> (outcome, reason): a task records its files in order, one sources row
    each, and an errors row for each it does not store (rows matched by order, not by path)."""
    assert len(result.sources) == len(files)
    errors = iter(result.errors)
    out = {}
    for info, row in zip(files, result.sources, strict=True):
        stored = row["outcome"] in ("ingested", "duplicate")
        out[info.path.rsplit("/", 1)[-1]] = (
            row["outcome"],
            None if stored else next(errors)["reason"],
        )
    assert next(errors, None) is None
    return out


def test_an_unexpected_error_is_recorded_by_type_and_the_task_goes_on(
    tmp_path, config, keyring, monkeypatch
):
    # No real file makes dicomlake's own code fail at will: the header step is made to fail,
    # with a message quoting a header value, for one file.
    real = worker.header_records

    def failing(split, secret, options):
        if split.dataset.get("Modality") == "CT":
            raise ValueError("cannot convert PatientName='Doe^John'")
        return real(split, secret, options)

    monkeypatch.setattr(worker, "header_records", failing)
    files = [_put(tmp_path, "ct.dcm", CT.read_bytes()), _put(tmp_path, "mr.dcm", MR.read_bytes())]
    result = _run(tmp_path, config, keyring, files)
    assert _outcomes(result, files) == {
        "ct.dcm": ("quarantined", "internal_error"),
        "mr.dcm": ("ingested", None),
    }
    message = result.errors[0]["message"]
    assert message.startswith("ValueError (in ") and "Doe" not in message, message
    # Nothing of the failed file is kept but its record: the rows are the other file's only
    staging = tmp_path / "lake" / "_staging" / "r1"
    for table in ("frames", "elements", "instances"):
        rows = [p for p in result.staged if p.startswith(f"tables/{table}/")]
        ids = set(pq.read_table(staging / rows[0]).column("instance_id").to_pylist())
        assert ids == {hashlib.sha256(MR.read_bytes()).hexdigest()}, table


def test_a_row_value_that_does_not_fit_its_column_fails_its_file_alone(
    tmp_path, config, keyring, monkeypatch
):
    # Headers give typed values that fit; two files are given values that do not: an integer
    # past int32 in their instance row, and a lone surrogate in their identities row
    real = worker.header_records

    def unfit(split, secret, options):
        records = real(split, secret, options)
        if split.dataset.get("Modality") == "CT":
            records.values["SeriesNumber"] = 2**40
        elif split.dataset.get("Modality") == "MR":
            assert records.identities is not None  # de-identification is on
            records.identities["original_PatientName"] = "Doe\udc80"
        return records

    monkeypatch.setattr(worker, "header_records", unfit)
    good = Path(get_testdata_file("JPEG2000.dcm")).read_bytes()
    files = [
        _put(tmp_path, "ct.dcm", CT.read_bytes()),
        _put(tmp_path, "good.dcm", good),
        _put(tmp_path, "mr.dcm", MR.read_bytes()),
    ]
    result = _run(tmp_path, config, keyring, files)
    assert _outcomes(result, files) == {
        "ct.dcm": ("quarantined", "internal_error"),
        "good.dcm": ("ingested", None),
        "mr.dcm": ("quarantined", "internal_error"),
    }
    assert "Doe" not in str(result.errors)
    # The task's tables were written, with the good file's rows alone
    staging = tmp_path / "lake" / "_staging" / "r1"
    ids = {}
    for table in ("frames", "elements", "instances"):
        files = [staging / p for p in result.staged if p.startswith(f"tables/{table}/")]
        ids[table] = set(pq.read_table(files[0]).column("instance_id").to_pylist())
    identities = [str(staging / p) for p in result.staged if p.startswith("restricted/identities/")]
    read = read_rows(LocalFileSystem(), identities, "identities", keyring, ["instance_id"])
    ids["identities"] = set(read.column("instance_id").to_pylist())
    assert ids == dict.fromkeys(ids, {hashlib.sha256(good).hexdigest()})


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_file_larger_than_listed_is_read_only_one_byte_past_its_listed_size(
    tmp_path, config, keyring, streamed
):
    data = CT.read_bytes()
    limits = dataclasses.replace(config.ingest, stream_bytes=1000 if streamed else 1 << 30)
    # Listed whole, then grown: bytes appended after the listing
    grown = _put(tmp_path, "growing.dcm", data + bytes(5000), listed_size=len(data))
    result = _run(tmp_path, dataclasses.replace(config, ingest=limits), keyring, [grown])
    assert _outcomes(result, [grown]) == {"growing.dcm": ("quarantined", "changed_while_reading")}
    assert result.bytes_read == len(data) + 1


def test_a_streamed_header_cut_short_when_listed_is_changed_while_reading(
    tmp_path, config, keyring
):
    # Listed while its copy was under way: at its listed size its pixel data is cut short
    data = CT.read_bytes()
    limits = dataclasses.replace(config.ingest, stream_bytes=1000)
    copying = _put(tmp_path, "copying.dcm", data, listed_size=len(data) - 5000)
    result = _run(tmp_path, dataclasses.replace(config, ingest=limits), keyring, [copying])
    assert _outcomes(result, [copying]) == {"copying.dcm": ("quarantined", "changed_while_reading")}
    assert result.errors[0]["message"] == (
        f"listed with {len(data) - 5000} bytes, {len(data)} bytes when its header was read"
    )
    assert result.bytes_read == 0  # refused on its header, not hashed through


def _sparse(tmp_path: Path, name: str, head: bytes) -> FileInfo:
    """A 1 GiB landing file (sparse): ``head``, then zeros."""
    path = tmp_path / "landing" / name
    path.parent.mkdir(exist_ok=True)
    with path.open("wb") as f:
        f.write(head)
        f.truncate(1 << 30)
    return FileInfo(str(path), 1 << 30, 1_000)


@pytest.mark.parametrize(
    ("name", "head", "reason", "message"),
    [
        (  # an archive
            "export.zip",
            b"PK\x03\x04" + bytes(200),
            "not_dicom",
            "no 'DICM' at offset 128 and bytes 0-3 are no tag of groups 0002-0008",
        ),
        (  # a preamble, then empty elements: a fixed limit, not ingest.max_chunk_bytes
            "zeros.dcm",
            bytes(128) + b"DICM",
            "too_large",
            "more than 500000 data elements (at offset 4000132)",
        ),
    ],
)
def test_a_streamed_file_whose_header_fails_is_refused_without_being_read_through(
    tmp_path, config, keyring, name, head, reason, message
):
    big = _sparse(tmp_path, name, head)
    assert big.size > config.ingest.stream_bytes
    result = _run(tmp_path, config, keyring, [big])
    assert _outcomes(result, [big]) == {name: ("quarantined", reason)}
    assert result.errors[0]["message"] == message
    assert result.bytes_read == 0  # not hashed through


def test_a_device_listed_as_a_file_is_not_read(tmp_path, config, keyring):
    (tmp_path / "landing").mkdir()
    zero = FileInfo("/dev/zero", 1 << 20, 1_000)
    result = _run(tmp_path, config, keyring, [zero])
    assert _outcomes(result, [zero]) == {"zero": ("failed", "unreadable")}
    assert result.bytes_read == 0


def test_deep_nesting_and_extreme_frame_counts_do_not_stop_the_task(tmp_path, config, keyring):
    mr = MR.read_bytes()
    meta_end = 132 + 12 + struct.unpack("<I", mr[140:144])[0]
    deep = mr[:meta_end] + _sequence(3000, closed=True) + mr[meta_end:]
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    ds.NumberOfFrames = 2**31
    frames = io.BytesIO()
    ds.save_as(frames, enforce_file_format=True)
    files = [
        _put(tmp_path, "a-deep.dcm", deep),
        _put(tmp_path, "b-frames.dcm", frames.getvalue()),
        _put(tmp_path, "c-good.dcm", CT.read_bytes()),
    ]
    outcomes = _outcomes(_run(tmp_path, config, keyring, files), files)
    assert set(outcomes) == {"a-deep.dcm", "b-frames.dcm", "c-good.dcm"}
    assert outcomes["c-good.dcm"] == ("ingested", None)
    assert outcomes["a-deep.dcm"][0] == "quarantined"


def test_a_small_deflate_bomb_does_not_stop_the_task(tmp_path, config, keyring):
    files = [
        _put(tmp_path, "bomb.dcm", _deflate_bomb(32 << 20)),
        _put(tmp_path, "good.dcm", CT.read_bytes()),
    ]
    # 32 MiB inflated, more than the 16 MiB a chunk may hold here (the bomb's file meta names
    # an instance: within the limit it would be stored)
    small = dataclasses.replace(
        config, ingest=dataclasses.replace(config.ingest, max_chunk_bytes=16 << 20)
    )
    result = _run(tmp_path, small, keyring, files)
    outcomes = _outcomes(result, files)
    assert outcomes["good.dcm"] == ("ingested", None)
    assert outcomes["bomb.dcm"] == ("quarantined", "too_large")
    assert result.errors[0]["message"] == (
        f"the deflated dataset inflates to more than {16 << 20} bytes (ingest.max_chunk_bytes)"
    )


def test_a_quarantine_copy_that_cannot_be_made_leaves_the_record(tmp_path, config, keyring):
    # The run's quarantine directory cannot be made: a file is in its place
    blocked = tmp_path / "lake" / "_staging" / "r1" / "quarantine"
    blocked.parent.mkdir(parents=True)
    blocked.write_bytes(b"")
    files = [
        _put(tmp_path, "junk.bin", b"not an image" * 20),
        _put(tmp_path, "ok.dcm", MR.read_bytes()),
    ]
    result = _run(tmp_path, config, keyring, files)
    assert _outcomes(result, files) == {
        "junk.bin": ("failed", "not_dicom"),  # failed: the next run tries it again
        "ok.dcm": ("ingested", None),
    }
    error = result.errors[0]
    assert error["quarantine_path"] is None
    assert "no quarantine copy: " in error["message"], error["message"]


def test_refused_entries_are_recorded_without_being_read(tmp_path, config, keyring):
    (tmp_path / "landing").mkdir()
    entries = [
        FileInfo(str(tmp_path / "landing" / "fifo"), 0, 1_000, "not_regular_file"),
        FileInfo(str(tmp_path / "landing" / "link"), 9, 1_000, "symlink"),
        FileInfo(str(tmp_path / "landing" / "locked"), 0, 1_000, "unreadable_dir"),
    ]
    result = _run(tmp_path, config, keyring, entries)
    assert _outcomes(result, entries) == {
        "fifo": ("skipped", "not_regular_file"),
        "link": ("skipped", "symlink"),
        "locked": ("failed", "unreadable_dir"),  # failed: the next run looks again
    }
    assert all(e["quarantine_path"] is None and e["message"] for e in result.errors)
    assert result.bytes_read == 0


def test_a_lake_that_cannot_be_written_stops_the_task_naming_it(tmp_path, config, keyring):
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"")
    with pytest.raises(LakeWriteError, match="cannot write pack"):
        _run(tmp_path, config, keyring, [_put(tmp_path, "ct.dcm", CT.read_bytes())], blocked)


def _with_uid(path: Path, n: int) -> bytes:
    """The file at ``path`` under a new SOP Instance UID (the same length for every ``n``)."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{1000 + n}"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _copies(count: int) -> list[bytes]:
    """``count`` distinct instances: CT_small under new SOP Instance UIDs."""
    return [_with_uid(CT, n) for n in range(count)]


def test_files_held_back_are_recorded_in_landing_order(tmp_path, config, keyring, monkeypatch):
    # Small files are held back and sealed together (worker.HELD_FILES at a time); neither the
    # files refused meanwhile nor those too big to be held may overtake them: rows follow the
    # landing order
    # Up to three MRs held at a time, while the CTs, too big to be held, are stored as they come
    held, big = 3 * len(_with_uid(MR, 0)), len(_with_uid(CT, 0))
    assert held < big
    monkeypatch.setattr(worker, "HELD_BYTES", held)
    count = 2 * worker.HELD_FILES + 5
    files, expected, good = [], {}, iter(_copies(count))
    for n in range(count):
        name = f"f{n:03d}.dcm"
        if n % 7 == 3:
            files.append(_put(tmp_path, name, b"not a DICOM file" * 10))
            expected[name] = ("quarantined", "not_dicom")
        elif n % 5 == 1:
            files.append(_put(tmp_path, name, _with_uid(MR, n)))
            expected[name] = ("ingested", None)
        else:
            files.append(_put(tmp_path, name, next(good)))
            expected[name] = ("ingested", None)
    result = _run(tmp_path, config, keyring, files)
    assert gc.isenabled()  # paused while the task ran, and on again
    assert _outcomes(result, files) == expected
    # Each row is its own file's, in the landing order (files of one outcome told apart)
    hashes = [hashlib.sha256(Path(f.path).read_bytes()).hexdigest() for f in files]
    assert [row["source_sha256"] for row in result.sources] == hashes
    staging = tmp_path / "lake" / "_staging" / "r1"
    stored = [  # one fragment per partition (the CTs', the MRs')
        pq.read_table(staging / p).column("instance_id").to_pylist()
        for p in result.staged
        if p.startswith("tables/instances/")
    ]
    ids = [i for part in stored for i in part]
    assert len(stored) == 2 and len(ids) == len(set(ids))
    assert set(ids) == {row["instance_id"] for row in result.sources if row["instance_id"]}


def test_a_copy_of_a_file_still_held_back_is_a_duplicate(tmp_path, config, keyring):
    # Both copies are small enough to be held back, the second read while the first is held
    data = CT.read_bytes()
    files = [_put(tmp_path, "a.dcm", data), _put(tmp_path, "b.dcm", data)]
    result = _run(tmp_path, config, keyring, files)
    assert _outcomes(result, files) == {
        "a.dcm": ("ingested", None),
        "b.dcm": ("duplicate", None),
    }
    staging = tmp_path / "lake" / "_staging" / "r1"
    for table in ("frames", "instances"):
        rows = [p for p in result.staged if p.startswith(f"tables/{table}/")]
        kinds = pq.read_table(staging / rows[0]).to_pylist()
        expected = 3 if table == "frames" else 1  # prefix, the one frame, suffix
        assert len(kinds) == expected, table


def test_a_held_file_whose_chunks_fail_to_encode_fails_alone(
    tmp_path, config, keyring, monkeypatch
):
    real = worker.codecs.encode
    ct_frame = pydicom.dcmread(CT).PixelData

    def failing(raw, spec=None, codec="auto", verify=True):
        if raw == ct_frame:
            raise MemoryError
        return real(raw, spec, codec=codec, verify=verify)

    monkeypatch.setattr(worker.codecs, "encode", failing)
    # A file refused while the CT is held: its errors row comes after the CT's
    files = [
        _put(tmp_path, "ct.dcm", CT.read_bytes()),
        _put(tmp_path, "junk.dcm", b"not a DICOM file" * 10),
        _put(tmp_path, "mr.dcm", MR.read_bytes()),
    ]
    gc.disable()  # as in a task: what only the collector frees stays
    try:
        result = _run(tmp_path, config, keyring, files)
        # The error and its traceback do not keep the held files alive in a cycle
        assert not [o for o in gc.get_objects() if isinstance(o, worker._Held)]
    finally:
        gc.enable()
    assert _outcomes(result, files) == {
        "ct.dcm": ("quarantined", "internal_error"),
        "junk.dcm": ("quarantined", "not_dicom"),
        "mr.dcm": ("ingested", None),
    }
    assert result.errors[0]["message"].startswith("MemoryError (in "), result.errors[0]
    assert result.errors[0]["source_sha256"] == hashlib.sha256(CT.read_bytes()).hexdigest()
    # Its quarantine copy is the file as it was read
    copy = result.errors[0]["quarantine_path"]
    assert copy is not None and copy in result.staged
