"""The SparkSession for dicomlake's jobs."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from dicomlake.config import Config

# Sensible defaults for these jobs: tasks are coarse and retried whole; speculation would run
# the same files twice at once for nothing.
DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.speculation": "false",
    "spark.task.maxFailures": "4",
    "spark.ui.showConsoleProgress": "true",
}


def spark_session(config: Config, *, submitted: bool) -> SparkSession:
    """The session to run on: spark-submit's (``submitted``) or one built from ``config.spark``.

    Under spark-submit, the master and resources come from the submit command line; the
    config's master would override them, so it is only used when dicomlake starts Spark itself.
    """
    builder = SparkSession.builder.appName(config.spark.app_name)
    if not submitted:
        builder = builder.master(config.spark.master)
        if config.spark.master.startswith("local"):
            # Stay on loopback whatever the host name resolves to.
            builder = builder.config("spark.driver.host", "127.0.0.1").config(
                "spark.driver.bindAddress", "127.0.0.1"
            )
            # Workers run this interpreter, which can import dicomlake and its own pyspark:
            # see dicomlake.spark_daemon (a second saved at every job's start).
            builder = builder.config("spark.python.daemon.module", "dicomlake.spark_daemon")
        # Executors of a local master run this same interpreter, with this package importable.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**DEFAULTS, **config.spark.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
