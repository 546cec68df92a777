"""The real-file test corpus: pydicom's test files, pydicom-data and deid-data.

The same files the sample landing zone is made of. Non-DICOM files in those folders (READMEs,
zips, JSON, ICC profiles) are kept on purpose: ingest must reject them as ``not_dicom``.
"""

from __future__ import annotations

from pathlib import Path

from dicomlake.samples import sample_files


def corpus_paths() -> list[Path]:
    """Return every corpus file, sorted."""
    return sorted(path for _, path in sample_files())


def corpus_id(path: Path) -> str:
    """Return a short test id naming the file (parent folder added where names repeat)."""
    return f"{path.parent.name}/{path.name}"
