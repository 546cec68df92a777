"""The Spark context dicomlake's jobs run on.

The jobs use only the core API (parallelize, mapPartitions, broadcast): they create no
SparkSession, which would load Spark SQL for ~1.7 s at every start and serve nothing here.
"""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf, SparkContext

from dicomlake.config import Config
from dicomlake.spark.jvm import local_jvm_options

# Sensible defaults for these jobs: tasks are coarse and retried whole; speculation would run
# the same files twice at once for nothing. The time zone is for SQL sessions built on the
# context (analysts' tables hold UTC timestamps).
DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.speculation": "false",
    "spark.task.maxFailures": "4",
    "spark.ui.showConsoleProgress": "true",
}


def spark_context(config: Config, *, submitted: bool) -> SparkContext:
    """The context to run on: spark-submit's (``submitted``) or one built from ``config.spark``.

    Under spark-submit, the master and resources come from the submit command line; the
    config's master would override them, so it is only used when dicomlake starts Spark itself.
    """
    conf = SparkConf().setAppName(config.spark.app_name)
    if not submitted:
        conf.setMaster(config.spark.master)
        if config.spark.master.startswith("local"):
            # Stay on loopback whatever the host name resolves to: the driver and block manager
            # by these, the UI by SPARK_LOCAL_IP (it ignores bindAddress and would listen on
            # every address). spark.conf may still open them up.
            conf.set("spark.driver.host", "127.0.0.1").set("spark.driver.bindAddress", "127.0.0.1")
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # Workers run this interpreter, which can import dicomlake and its own pyspark:
            # see dicomlake.spark.daemon (workers forked warm, their collections kept short).
            conf.set("spark.python.daemon.module", "dicomlake.spark.daemon")
            # This JVM is driver and executor for one short job: see dicomlake.spark.jvm.
            conf.set("spark.driver.extraJavaOptions", local_jvm_options())
        # Executors of a local master run this same interpreter, with this package importable.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**DEFAULTS, **config.spark.conf}.items():
        conf.set(key, value)
    sc = SparkContext.getOrCreate(conf)
    sc.setLogLevel("WARN")
    return sc
