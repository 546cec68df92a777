"""The stored vocabularies (dicomlake.vocab) are the whole truth: every reason code the code can
record is a `RejectReason` and every member is recorded somewhere; the README names each code;
a member is its stored string."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from dicomlake.backup.layout import parse_snapshot_id, snapshot_id
from dicomlake.errors import BackupError
from dicomlake.vocab import ChunkKind, RejectReason, SnapshotMode, SourceOutcome

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib" / "dicomlake"


def _codes_in_source() -> set[str]:
    """Reason codes as the source spells them: literal first arguments of DicomParseError and
    literal reasons given to a task's ``reject``, and ``RejectReason.X`` members named."""
    found: set[str] = set()
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                given = {"DicomParseError": node.args[:1], "reject": node.args[1:2]}.get(name, [])
                found |= {a.value for a in given if isinstance(a, ast.Constant)}
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "RejectReason"
            ):
                found.add(node.attr.lower())
    return found


def test_every_recorded_reason_is_a_member_and_every_member_is_recorded():
    assert _codes_in_source() == {r.value for r in RejectReason}


def test_the_readme_names_every_reason_code():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [r.value for r in RejectReason if f"`{r.value}`" not in readme]
    assert not missing, f"README.md does not name these reason codes: {missing}"


def test_a_member_is_stored_as_its_string():
    row = {"outcome": SourceOutcome.QUARANTINED, "kind": ChunkKind.FRAME}
    assert pa.Table.from_pylist([row]).to_pylist() == [{"outcome": "quarantined", "kind": "frame"}]
    assert json.loads(json.dumps(row)) == {"outcome": "quarantined", "kind": "frame"}
    assert f"{RejectReason.TOO_DEEP}: 65 levels" == "too_deep: 65 levels"
    assert {"ingested": 1}[SourceOutcome.INGESTED] == 1


def test_snapshot_ids_carry_their_mode():
    sid = snapshot_id("20261127T031500Z", "differential")
    assert sid == "20261127T031500Z-differential"
    assert parse_snapshot_id(sid)[1] is SnapshotMode.DIFFERENTIAL
    with pytest.raises(BackupError, match=re.escape("'weekly'")):
        snapshot_id("20261127T031500Z", "weekly")
