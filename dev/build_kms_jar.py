"""Build the Java KMS client for Spark's Parquet Modular Encryption: .cache/dicomlake-kms.jar.

Compiles java/org/dicomlake/kms/*.java with javac against pyspark's own jars (Parquet, Hadoop
client API) and packs the classes. Cached: rebuilt only when a source file or pyspark's
parquet-hadoop jar changes. Prints the jar's path.

    .venv/bin/python dev/build_kms_jar.py
    spark-submit --jars .cache/dicomlake-kms.jar ...
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "java"
JAR = REPO / ".cache" / "dicomlake-kms.jar"


def spark_jars() -> Path:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SystemExit("pyspark is not installed: run dev/setup.sh")
    return Path(spec.origin).parent / "jars"


def fingerprint(sources: list[Path], jars: Path) -> str:
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.relative_to(SOURCES).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    for jar in sorted(jars.glob("parquet-hadoop-*.jar")) + sorted(jars.glob("hadoop-client-api-*")):
        digest.update(jar.name.encode() + b"\0")
    return digest.hexdigest()


def build(out: Path = JAR, force: bool = False) -> Path:
    """Build (or reuse) the jar; returns its path."""
    sources = sorted(SOURCES.rglob("*.java"))
    if not sources:
        raise SystemExit(f"no Java sources under {SOURCES}")
    jars = spark_jars()
    stamp = out.with_name(out.name + ".sha256")
    want = fingerprint(sources, jars)
    if not force and out.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return out
    javac = shutil.which("javac")
    if javac is None:
        raise SystemExit("javac not found: install a JDK 17 (Spark needs Java 17 anyway)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        classes = Path(tmp)
        cmd = [javac, "--release", "17", "-nowarn", "-cp", f"{jars}/*", "-d", str(classes)]
        proc = subprocess.run(
            cmd + [str(s) for s in sources], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"javac failed:\n{proc.stdout}{proc.stderr}")
        partial = out.with_name(out.name + ".tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
            for path in sorted(classes.rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
        partial.replace(out)
    stamp.write_text(want + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(JAR), help=f"jar path (default {JAR})")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    print(build(Path(args.out), force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
