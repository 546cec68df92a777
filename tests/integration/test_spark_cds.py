"""A local Spark JVM maps Spark's classes from the class-data sharing archive made for its java
and Spark jars; each step runs in a process of its own, as the archive is written by a JVM as
it exits and read by a new one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dicomlake.spark.jvm import archive_key, find_archive

pytestmark = pytest.mark.spark

_MAPPED = """
import subprocess
from dicomlake.config import load_config
from dicomlake.spark.context import spark_context
from dicomlake.spark.jvm import java_binary
sc = spark_context(load_config(env={}), submitted=False)
pid = str(sc._jvm.java.lang.ProcessHandle.current().pid())
jcmd = str(java_binary().parent / "jcmd")
print(subprocess.run([jcmd, pid, "VM.info"], capture_output=True, text=True, check=True).stdout)
"""


def _run(cache: Path, *args: str) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _top_archive_bytes(cache: Path) -> int:
    """Bytes the JVM maps beyond the JDK's own archive, from ``jcmd <pid> VM.info``."""
    info = _run(cache, "-c", _MAPPED)
    # "CDS archive(s) mapped at: [base start-base end-top end)"
    match = re.search(
        r"CDS archive\(s\) mapped at: \[0x[0-9a-f]+-(0x[0-9a-f]+)-(0x[0-9a-f]+)\)", info
    )
    assert match, info[-2000:]
    return int(match.group(2), 16) - int(match.group(1), 16)


def test_a_local_jvm_maps_the_archive_made_for_it(tmp_path):
    cache = tmp_path / "cache"
    assert _top_archive_bytes(cache) == 0  # no archive yet: the JDK's own only

    made = _run(cache, "-m", "dicomlake.spark.cds")
    (archive,) = (cache / "dicomlake").iterdir()  # no partial file left
    size = archive.stat().st_size
    assert archive.name.endswith(f"-{size}.jsa") and size > 20 << 20 and str(archive) in made
    assert _top_archive_bytes(cache) > size // 2
    assert _run(cache, "-m", "dicomlake.spark.cds") == ""  # made already: nothing to do

    # cut short (a full disk, a copy cut off): HotSpot would crash on it; it is not used
    with archive.open("r+b") as f:
        f.truncate(size // 2)
    assert _top_archive_bytes(cache) == 0


def test_an_archive_is_found_by_its_key_and_its_size(tmp_path):
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_bytes(b"#!")
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "spark-core.jar").write_bytes(b"1")
    first = archive_key(java, jars)
    assert first is not None and archive_key(java, jars) == first
    (jars / "extra.jar").write_bytes(b"2")  # a jar more: another class path
    second = archive_key(java, jars)
    os.utime(java, ns=(1, 1))  # java upgraded in place
    third = archive_key(java, jars)
    assert len({first, second, third}) == 3
    assert archive_key(None, jars) is None

    (tmp_path / f"spark-{first}-3.jsa").write_bytes(b"abc")
    (tmp_path / f"spark-{second}-9.jsa").write_bytes(b"abc")  # not the size it was made with
    (tmp_path / f"spark-{third}.123.tmp").write_bytes(b"abc")  # still being made
    assert find_archive(tmp_path, first) == tmp_path / f"spark-{first}-3.jsa"
    assert find_archive(tmp_path, second) is None
    assert find_archive(tmp_path, third) is None
