"""notebooks/analyst.ipynb runs top to bottom on a small lake, every cell without error."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

import nbformat
import pydicom
import pytest
from nbclient import NotebookClient

from dicomlake.ingest.job import run_ingest
from dicomlake.keyring_file import save_keyring

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "analyst.ipynb"

# Real files from pydicom's test data, chosen for variety: CT and MR with private tags, the same
# MR instance again as RLE (a second version of one SOPInstanceUID), a multi-frame RT dose, an
# RT plan and an SR without pixels (nested sequences), a SEG, an ultrasound, an NM, an RGB
# secondary capture, and a file that is not DICOM.
LANDING_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "rtdose.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
    "liver_1frame.dcm",
    "examples_palette.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "README.txt",
]


def distinct_instances(landing: Path) -> int:
    """How many SOP instances the landing zone holds, by pydicom alone."""
    uids = set()
    for path in landing.iterdir():
        with contextlib.suppress(pydicom.errors.InvalidDicomError):
            uids.add(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    return len(uids)


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory, sc, config, keyring) -> tuple[Path, Path, int]:
    root = tmp_path_factory.mktemp("notebook")
    landing = root / "landing"
    landing.mkdir()
    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in LANDING_FILES:
        shutil.copy2(test_files / name, landing / name)
    keyring_path = root / "keyring.json"
    save_keyring(str(keyring_path), keyring, config)
    run_ingest(sc, str(landing), str(root / "lake"), config, keyring)
    return root / "lake", keyring_path, distinct_instances(landing)


@pytest.mark.spark
@pytest.mark.slow
def test_every_cell_runs(
    small_lake: tuple[Path, Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, keyring, instances = small_lake
    monkeypatch.setenv("ANALYST_LAKE", str(lake))
    monkeypatch.setenv("ANALYST_KEYRING", str(keyring))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Raises CellExecutionError, with the cell and its traceback, on the first failing cell.
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a code cell did not run"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    # Every cell that ends in a query or a plot showed something.
    silent = [
        c.source.splitlines()[0]
        for c in code
        if not c.outputs and not c.source.strip().endswith(("spark.stop()", ")"))
    ]
    assert not silent, silent
    images = [c for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5  # modality counts, study years, storage, the decoded image, montage
    text = "\n".join(o.get("text", "") for c in code for o in c.outputs)
    assert f"Spark SQL and DuckDB agree on {instances} instances" in text
    bulk = re.search(r"(\d+) frames of (\d+) instances", text)
    assert bulk and int(bulk[1]) > int(bulk[2]) > 1, text  # rtdose has many frames
