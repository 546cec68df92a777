"""The benchmark's Orthanc peer: a real Orthanc (Debian's) stores every file it is sent.

What Orthanc holds is asked of Orthanc itself, over its REST API, and compared with what
pydicom reads from the files sent.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psutil
import pydicom
import pydicom.data
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import orthanc_peer  # noqa: E402

FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")


@pytest.fixture(autouse=True)
def _orthanc_installed() -> None:
    if shutil.which("Orthanc") is None:
        pytest.fail("Orthanc is needed: bash bench/setup.sh (as root) installs it")


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    root.mkdir()
    for name in FILES:
        shutil.copy(pydicom.data.get_testdata_file(name), root / name)
    return root


def _get(server: orthanc_peer.Orthanc, path: str) -> Any:
    conn = server.connection()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, path
        return json.loads(response.read())
    finally:
        conn.close()


def test_every_file_is_stored_and_orthanc_stops(landing: Path, tmp_path: Path) -> None:
    files = sorted(landing.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    work = tmp_path / "orthanc"
    work.mkdir()
    with orthanc_peer.running(work, False, tmp_path / "orthanc.log") as server:
        result = orthanc_peer.upload(server, files, clients=2)
        ids = _get(server, "/instances")
        stored = {_get(server, f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in ids}
        pid = server.pid
    assert stored == expected
    assert result["files"] == len(files)
    assert result["bytes_read"] == sum(p.stat().st_size for p in files)
    assert not psutil.pid_exists(pid)


def test_measure_reports_sizes_and_leaves_nothing(landing: Path, tmp_path: Path) -> None:
    total = sum(p.stat().st_size for p in landing.iterdir())
    before = set(Path(tempfile.gettempdir()).glob("dicomlake-orthanc-*"))
    raw = orthanc_peer.measure(landing, False, tmp_path / "raw.log")
    packed = orthanc_peer.measure(landing, True, tmp_path / "zlib.log")
    assert raw["files"] == packed["files"] == len(FILES)
    assert raw["bytes_read"] == packed["bytes_read"] == total
    # Raw storage holds every file whole, and an index besides; zlib holds the files smaller
    assert raw["stored_bytes"] > total
    assert packed["stored_bytes"] < raw["stored_bytes"]
    assert set(Path(tempfile.gettempdir()).glob("dicomlake-orthanc-*")) == before
