"""The pure packages stay pure: bytes in, values out (ARCHITECTURE.md, "Layering").

`dicomlake.dicom`, `dicomlake.pixels` and `dicomlake.crypto` import no pyspark, none of
dicomlake's storage, lake, ingest or backup packages (nor any other dicomlake module but each
other, `dicomlake.errors` and `dicomlake.vocab`, bar `ALLOWED`), no filesystem or network
module, and call no filesystem function (builtin ``open``, ``os.walk``, ``os.path.exists``...).
Checked on the source text with `ast`, so the verdict depends on the files alone, not on what
is installed or on import order.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib"
PURE = ("dicomlake.dicom", "dicomlake.pixels", "dicomlake.crypto")
# The dicomlake modules a pure package may import besides the pure packages themselves: the
# exceptions, and the stored vocabularies (enums, importing nothing).
SHARED = ("dicomlake.errors", "dicomlake.vocab")
# Modules whose only use is I/O (files, network, processes) or dynamic imports that would hide
# a dependency from this check.
FORBIDDEN_MODULES = (
    "pyspark",
    "py4j",
    "hdfs",
    "requests",
    "urllib3",
    "urllib.request",
    "http.client",
    "socket",
    "subprocess",
    "pathlib",
    "shutil",
    "glob",
    "tempfile",
    "fileinput",
    "mmap",
    "pyarrow.fs",
    "pyarrow.dataset",
    "importlib",
)
# fmt: off
OS_FILE_NAMES = frozenset({
    "open", "fdopen", "walk", "fwalk", "listdir", "scandir", "stat", "lstat", "remove",
    "unlink", "rename", "renames", "replace", "makedirs", "mkdir", "rmdir", "removedirs",
    "chmod", "chown", "link", "symlink", "readlink", "truncate", "utime", "access", "chdir",
    "getcwd", "mkfifo",
})
OS_PATH_FILE_NAMES = frozenset({
    "exists", "lexists", "isfile", "isdir", "islink", "ismount", "getsize", "getmtime",
    "getatime", "getctime", "realpath", "abspath", "samefile", "expanduser",
})
# fmt: on
IO_FILE_NAMES = frozenset({"open", "open_code", "FileIO"})

# (file under lib/, imported module) -> why this import is accepted anyway.
ALLOWED = {
    ("dicomlake/dicom/deid.py", "dicomlake.config"): (
        "DeidConfig is the typed, frozen options record of de-identification; deid only reads "
        "its fields and never calls load_config, the part of dicomlake.config that reads a file"
    ),
    ("dicomlake/dicom/header.py", "dicomlake.config"): (
        "header_records takes the same DeidConfig and hands its fields to deid and the "
        "compiled core; it never calls load_config"
    ),
}


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _resolve(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of a ``from ... import`` (relative ones resolved from ``package``)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def violations(source: str, relative: str) -> list[str]:
    """What in ``source`` (the file at ``relative`` under lib/) breaks the purity rules."""
    module = relative.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    package = module if relative.endswith("__init__.py") else module.rpartition(".")[0]
    found: list[str] = []
    aliases: dict[str, str] = {}  # local name -> "os", "os.path" or "io"
    shadowed_open = False

    allowed = PURE + SHARED + tuple(m for f, m in ALLOWED if f == relative)

    def imported(name: str, line: int) -> None:
        if _within(name, FORBIDDEN_MODULES):
            found.append(f"{relative}:{line}: imports {name} (I/O or a hidden import)")
        elif _within(name, ("dicomlake",)) and not _within(name, allowed):
            found.append(f"{relative}:{line}: imports {name}, outside the pure packages")

    tree = ast.parse(source, relative)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported(alias.name, node.lineno)
                if alias.name in ("os", "os.path", "io"):
                    local = alias.asname or alias.name.split(".")[0]
                    aliases[local] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source_module = _resolve(node, package)
            for alias in node.names:
                full = f"{source_module}.{alias.name}"
                imported(full, node.lineno)
                if full == "os.path":
                    aliases[alias.asname or alias.name] = "os.path"
                elif (
                    (source_module == "os" and alias.name in OS_FILE_NAMES)
                    or (source_module == "os.path" and alias.name in OS_PATH_FILE_NAMES)
                    or (source_module == "io" and alias.name in IO_FILE_NAMES)
                ):
                    found.append(f"{relative}:{node.lineno}: imports {full} (filesystem)")
                if (alias.asname or alias.name) == "open":
                    shadowed_open = True
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            shadowed_open = shadowed_open or node.name == "open"
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            shadowed_open = shadowed_open or node.id == "open"

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "open" and not shadowed_open:
                found.append(f"{relative}:{node.lineno}: calls the builtin open (filesystem)")
        elif isinstance(node, ast.Attribute):
            owner = _dotted(node.value, aliases)
            if (
                (owner == "os" and node.attr in OS_FILE_NAMES)
                or (owner == "os.path" and node.attr in OS_PATH_FILE_NAMES)
                or (owner == "io" and node.attr in IO_FILE_NAMES)
            ):
                found.append(f"{relative}:{node.lineno}: uses {owner}.{node.attr} (filesystem)")
    return found


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``os``, ``os.path`` or ``io`` when ``node`` names one of them, else None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute) and node.attr == "path":
        return "os.path" if _dotted(node.value, aliases) == "os" else None
    return None


def _pure_files() -> list[Path]:
    files = []
    for package in PURE:
        files.extend(sorted((LIB / package.replace(".", "/")).rglob("*.py")))
    return files


def test_the_pure_packages_have_source_files():
    """Guards the check itself: an emptied or moved package must not pass by having no files."""
    for package in PURE:
        init = LIB / package.replace(".", "/") / "__init__.py"
        assert init.is_file(), f"{package} is not at {init.parent}"
    assert len(_pure_files()) >= 10


def test_pure_packages_import_no_io_and_no_outer_layer():
    found = []
    for path in _pure_files():
        found += violations(path.read_text(encoding="utf-8"), path.relative_to(LIB).as_posix())
    assert not found, "the pure packages must stay bytes in, values out:\n" + "\n".join(found)


def test_every_allowed_exception_is_still_used():
    """An entry of ALLOWED whose import is gone must go too, so the list stays the truth."""
    for relative, module in ALLOWED:
        tree = ast.parse((LIB / relative).read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert module in names, f"ALLOWED lists {module} for {relative}, which no longer imports it"


@pytest.mark.parametrize(
    "source",
    [
        "import pyspark",
        "from pyspark import SparkContext",
        "from dicomlake.storage import filesystem_for",
        "import dicomlake.lake.layout",
        "from dicomlake.ingest.worker import process_task",
        "from dicomlake import backup",
        "from ..storage import join",
        "from dicomlake.config import load_config",  # allowed for deid.py only
        "from dicomlake.keyring_file import load_keyring",
        "import pathlib",
        "from pathlib import Path",
        "import shutil",
        "import importlib; importlib.import_module('pyspark')",
        "data = open('x', 'rb').read()",
        "import os\nfor _ in os.walk('.'): pass",
        "import os\nos.path.exists('x')",
        "import os as o\no.listdir('.')",
        "from os import path\npath.isfile('x')",
        "from os import scandir",
        "import io\nio.open('x')",
        "import os\nreader = os.stat",
    ],
)
def test_the_check_catches(source):
    assert violations(textwrap.dedent(source), "dicomlake/pixels/example.py")


@pytest.mark.parametrize(
    "source",
    [
        "import os\nkey = os.urandom(32)",
        "import io\nbuf = io.BytesIO(b'')",
        "from dicomlake.errors import CodecError",
        "from dicomlake.crypto.keyring import Keyring",
        "from . import codecs",
        "stream.open('x')",  # a method of an object the caller passed in
        "def f():\n    '''>>> open('x').read()'''",  # a doctest is text, not a call
        "from gzip import open as gz_open\nopen = gz_open\nopen(b'')",
        "import pyarrow.parquet.encryption as pe",
    ],
)
def test_the_check_accepts(source):
    assert violations(textwrap.dedent(source), "dicomlake/pixels/example.py") == []


def test_the_allow_list_names_one_file_only():
    source = "from dicomlake.config import DeidConfig"
    assert violations(source, "dicomlake/dicom/deid.py") == []
    assert violations(source, "dicomlake/dicom/promote.py")


# The modules that may import pyspark or py4j: the Spark runtime, the two Spark jobs, and the
# CLI, which hands `register` a SparkSession.
SPARK_USERS = ("dicomlake.spark", "dicomlake.ingest", "dicomlake.backup", "dicomlake.cli")


def _imports(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, _resolve(node, package)))
    return found


def test_only_the_spark_runtime_and_jobs_import_pyspark():
    found = []
    for path in sorted((LIB / "dicomlake").rglob("*.py")):
        relative = path.relative_to(LIB).as_posix()
        module = relative.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        if _within(module, SPARK_USERS):
            continue
        package = module if relative.endswith("__init__.py") else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), relative)
        found += [
            f"{relative}:{line}: imports {name}"
            for line, name in _imports(tree, package)
            if _within(name, ("pyspark", "py4j"))
        ]
    assert not found, "pyspark belongs to dicomlake.spark and the jobs:\n" + "\n".join(found)


def test_the_spark_runtime_has_no_cycle_with_the_jobs():
    """`dicomlake.spark` is below ingest and backup: it imports neither."""
    found = []
    for path in sorted((LIB / "dicomlake" / "spark").rglob("*.py")):
        relative = path.relative_to(LIB).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), relative)
        found += [
            f"{relative}:{line}: imports {name}"
            for line, name in _imports(tree, "dicomlake.spark")
            if _within(name, ("dicomlake.ingest", "dicomlake.backup", "dicomlake.cli"))
        ]
    assert len(list((LIB / "dicomlake" / "spark").glob("*.py"))) >= 4
    assert not found, "\n".join(found)
