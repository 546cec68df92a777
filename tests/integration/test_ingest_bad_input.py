"""Bad input never stops a run: each file gets its errors row with a reason code, and a copy."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import struct
import subprocess
from pathlib import Path

import pydicom
import pytest
from ingest_helpers import ingest_command, table, with_paths
from pydicom.data import get_testdata_file

from dicomlake.config import load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import LakeError
from dicomlake.ingest.job import run_ingest
from dicomlake.ingest.worker import TaskContext, process_task
from dicomlake.lake.quarantine import get_copy
from dicomlake.storage import FileInfo

pytestmark = pytest.mark.spark

CT = Path(get_testdata_file("CT_small.dcm"))  # explicit VR little endian, native pixels


def _pixel_value_offset(path: Path) -> int:
    ds = pydicom.dcmread(path, defer_size=1)
    data = path.read_bytes()
    return data.index(b"\xe0\x7f\x10\x00") + 12 if ds else 0  # (7FE0,0010) OW, 4 reserved+len


def _bad_files(landing: Path) -> dict[str, str]:
    """name -> the reason code an independent reading of the bytes says it must get."""
    data = CT.read_bytes()
    pixels = _pixel_value_offset(CT)
    expected = {}

    def put(name: str, content: bytes, reason: str) -> None:
        (landing / name).write_bytes(content)
        expected[name] = reason

    put("empty.dcm", b"", "empty")
    put("random.bin", random.Random(7).randbytes(5000), "not_dicom")
    put("text.txt", b"patient list\nnot an image\n" * 40, "not_dicom")
    # Cut before "DICM": nothing tells these bytes from any other file.
    put("cut-in-preamble.dcm", data[:60], "not_dicom")
    put("cut-in-meta.dcm", data[:200], "truncated")
    put("cut-in-pixels.dcm", data[: pixels + 1000], "truncated")
    # A VR no standard defines, on the second element after the file meta (the first one
    # decides, as in pydicom, whether the dataset is read as explicit VR at all).
    meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]
    second = meta_end + 8 + struct.unpack("<H", data[meta_end + 6 : meta_end + 8])[0]
    bad_vr = bytearray(data)
    bad_vr[second + 4 : second + 6] = b"Q!"
    put("bad-vr.dcm", bytes(bad_vr), "corrupt")
    # An element length that runs past the end of the file, in the header.
    bad_len = bytearray(data)
    bad_len[meta_end + 6 : meta_end + 8] = b"\xff\xff"
    # A length past the end of the file cannot be told from a file cut short; the message
    # names the element, its offset and the declared length.
    put("bad-length.dcm", bytes(bad_len), "truncated")
    # Named otherwise than its kind, which its message names
    put("DICOMDIR.1", Path(get_testdata_file("DICOMDIR")).read_bytes(), "dicomdir")
    put("good.dcm", data, "")
    return expected


def test_each_bad_file_gets_its_reason_and_the_run_goes_on(tmp_path, sc, config, keyring):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    expected = _bad_files(landing)
    big = landing / "big.dcm"
    big.write_bytes(CT.read_bytes() + b"\0" * 200_000)
    small_limit = dataclasses.replace(
        config,
        ingest=dataclasses.replace(
            config.ingest,
            max_file_bytes=150_000,
            quarantine_max_bytes=150_000,
            error_threshold=1.0,
        ),
    )
    summary = run_ingest(sc, str(landing), str(lake), small_limit, keyring)
    rows = with_paths(table(lake, "errors").to_pylist(), keyring, landing.iterdir())
    errors = {Path(r["source_path"]).name: r for r in rows}
    for name, reason in expected.items():
        if reason:
            row = errors[name]
            assert row["reason"] == reason, (name, row["message"])
            assert row["message"] and name not in row["message"]
            # the copy is encrypted, named by its error id; the key holder gets it back
            assert (
                row["quarantine_path"]
                == f"quarantine/{row['ingest_run_id']}/{row['error_id']}.pack"
            )
            original = (landing / name).read_bytes()
            if len(original) >= 64:
                assert original[-64:] not in (lake / row["quarantine_path"]).read_bytes()
            out = tmp_path / "got" / name
            out.parent.mkdir(exist_ok=True)
            get_copy(str(lake), keyring, small_limit, row["error_id"], out)
            assert out.read_bytes() == original
            # not into the lake, whose snapshots would copy it in clear
            inside = lake / "quarantine" / name
            with pytest.raises(LakeError, match=f"--out {inside} is in the lake at {lake}"):
                get_copy(str(lake), keyring, small_limit, row["error_id"], inside)
            assert not inside.exists()
    # over ingest.quarantine_max_bytes: the record, no copy
    assert errors["big.dcm"]["reason"] == "too_large"
    assert errors["big.dcm"]["quarantine_path"] is None
    assert len(list((lake / "quarantine").rglob("*.pack"))) == len(errors) - 1
    instances = with_paths(table(lake, "instances").to_pylist(), keyring, landing.iterdir())
    assert [Path(r["source_path"]).name for r in instances] == ["good.dcm"]
    assert summary.quarantined == len(errors) == sum(1 for r in expected.values() if r) + 1


@pytest.mark.parametrize(
    ("directory", "scheme"),
    [
        ("DOE^JOHN_19650412/MRN12345678", ""),
        # Names an OSError's text would quote escaped ("\\t", "\\\\", "\\xa0"), and short ones
        ("DOE\tJOHN_19650412", ""),
        ("DOE\\JOHN", ""),
        ("DOE\xa0JOHN", ""),
        ("DOE/JD", "file://"),
    ],
)
def test_a_file_gone_before_reading_is_recorded_and_retried(
    tmp_path, config, keyring, directory, scheme
):
    lake = tmp_path / "lake"
    landing = tmp_path / "landing"
    (landing / directory).mkdir(parents=True)
    ghost = FileInfo(f"{scheme}{landing}/{directory}/ghost.dcm", 1234, 1_700_000_000_000)
    ctx = TaskContext(
        run_id="r1",
        lake=str(lake),
        config=config,
        keyring=keyring.to_bytes(),
        started_ms=1_700_000_000_000,
    )
    result = process_task(0, 0, [ghost], f"{scheme}{landing}", ctx, frozenset())
    assert [e["reason"] for e in result.errors] == ["unreadable"]
    # the message says what failed, never where: the path is in the restricted table
    assert result.errors[0]["message"] == "cannot read the file: ENOENT: No such file or directory"
    # "failed" is not "seen": the ledger lets the next run try the file again.
    assert [s["outcome"] for s in result.sources] == ["failed"]


def test_error_threshold_fails_the_run_after_committing_it(tmp_path, config):
    from dicomlake.cli import EXIT_THRESHOLD
    from dicomlake.keyring_file import save_keyring

    landing = tmp_path / "landing"
    landing.mkdir()
    for i in range(4):
        (landing / f"junk{i}.bin").write_bytes(os.urandom(300))
    keyring_path = tmp_path / "k.json"
    save_keyring(str(keyring_path), Keyring.generate(), load_config(env={}))
    proc = subprocess.run(
        ingest_command(landing, tmp_path / "lake", keyring_path),
        env={**os.environ, "DICOMLAKE_SPARK_MASTER": "local[1]"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == EXIT_THRESHOLD, proc.stderr
    assert "error_threshold" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["quarantined"] == 4
    assert table(tmp_path / "lake", "errors").num_rows == 4
    assert table(tmp_path / "lake", "runs").num_rows == 1


def test_a_file_that_grows_past_the_copy_limit_keeps_its_record_only(tmp_path, config, keyring):
    """Listed small enough to copy, it is over ingest.quarantine_max_bytes by the time it is
    read: the copy stops there and leaves nothing staged."""
    lake, landing = tmp_path / "lake", tmp_path / "landing"
    landing.mkdir()
    grown = landing / "grown.dcm"
    grown.write_bytes(CT.read_bytes() * 3)
    listed = FileInfo(str(grown), 500, 1_700_000_000_000)  # as listed before it grew
    limits = dataclasses.replace(
        config.ingest, max_file_bytes=400, quarantine_max_bytes=1000, error_threshold=1.0
    )
    ctx = TaskContext(
        run_id="r1",
        lake=str(lake),
        config=dataclasses.replace(config, ingest=limits),
        keyring=keyring.to_bytes(),
        started_ms=1_700_000_000_000,
    )
    result = process_task(0, 0, [listed], str(landing), ctx, frozenset())
    [error] = result.errors
    assert (error["reason"], error["quarantine_path"]) == ("too_large", None)
    assert [s["outcome"] for s in result.sources] == ["quarantined"]
    assert not [p for p in result.staged if p.startswith("quarantine/")] and not result.packs
    assert not list((lake / "_staging" / "r1").rglob("*.pack"))


def test_a_refused_entry_keeps_its_message_whole_whatever_its_directories_are_called(
    tmp_path, config, keyring
):
    from dicomlake.storage import ENTRY_PROBLEMS
    from dicomlake.vocab import RejectReason

    # Directories named like the words of the messages: nothing of the path is in them to mask
    landing = tmp_path / "landing"
    problems = [RejectReason.SYMLINK_OUTSIDE, RejectReason.NOT_REGULAR_FILE]
    entries = [
        FileInfo(f"{landing}/zone/file/name/{i}.dcm", 0, 1_700_000_000_000, problem)
        for i, problem in enumerate(problems)
    ]
    ctx = TaskContext(
        run_id="r1",
        lake=str(tmp_path / "lake"),
        config=config,
        keyring=keyring.to_bytes(),
        started_ms=1_700_000_000_000,
    )
    result = process_task(0, 0, entries, str(landing), ctx, frozenset())
    assert [e["message"] for e in result.errors] == [ENTRY_PROBLEMS[p] for p in problems]
