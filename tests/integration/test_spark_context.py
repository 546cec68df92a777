"""Local Spark workers import the installed pyspark, not a copy compiled again from Spark's zip,
and start from a daemon that already imported the code the tasks read with, out of the
collector's sight."""

from __future__ import annotations

import pyspark


def test_local_workers_import_the_installed_pyspark(sc) -> None:
    def worker_pyspark(_):
        import pyspark as imported

        yield imported.__file__

    files = sc.parallelize(range(2), 2).mapPartitions(worker_pyspark).collect()
    assert ".zip" not in pyspark.__file__
    assert files == [pyspark.__file__] * 2, files


def test_local_workers_are_forked_warm(sc) -> None:
    def worker_state(_):
        import gc
        import sys

        yield (
            gc.get_freeze_count() > 10_000,  # only the daemon freezes: the heap it forked with
            "dicomlake.dicom.header" in sys.modules and "imagecodecs" in sys.modules,
            "pandas" in sys.modules,  # pyarrow's conversions do not import it
            # Spark's core jar, on the path Spark gives: neither on it nor read by an importer
            [p for p in [*sys.path, *sys.path_importer_cache] if "spark-core_" in p],
        )

    states = sc.parallelize(range(2), 2).mapPartitions(worker_state).collect()
    assert states == [(True, True, False, [])] * 2, states


def test_local_jvm_runs_the_client_compiler_only(sc) -> None:
    jvm = sc._jvm
    bean_class = jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(bean_class)
    # HotSpot's default is 4 (C1 then C2); a local context asks for C1 alone.
    assert bean.getVMOption("TieredStopAtLevel").getValue() == "1"
