"""The one HDFS user a dicomlake process acts as, whichever client writes.

WebHDFS calls (packs, table fragments, the lock) name ``hdfs.user`` themselves, on the driver
and on executors, which get the driver's config. deltalake's native HDFS client, which writes
the tables' Delta logs, and the Hadoop client of a JVM started after this take their user from
``HADOOP_USER_NAME`` under simple authentication, or else from the login name. Without one
user for both, a lake's logs and its data files would be written by two users, and a lake
writable by that user alone would take a run's files but refuse its commits.
"""

from __future__ import annotations

import dataclasses
import os

from dicomlake.config import HdfsConfig
from dicomlake.errors import ConfigError

ENV = "HADOOP_USER_NAME"


def one_user(hdfs: HdfsConfig) -> HdfsConfig:
    """``hdfs`` with the user every HDFS client of this process acts as (see the module doc):
    ``hdfs.user``, put in ``HADOOP_USER_NAME``; where it is empty, ``HADOOP_USER_NAME``'s user,
    as Hadoop's own client takes it; else the login name for all, as before.

    Kerberos is left alone (the ticket names the user). A ``HADOOP_USER_NAME`` naming another
    user than ``hdfs.user`` is a ConfigError naming both.
    """
    current = os.environ.get(ENV, "")
    if hdfs.auth != "simple" or not (hdfs.user or current):
        return hdfs
    if not hdfs.user:
        return dataclasses.replace(hdfs, user=current)
    if current and current != hdfs.user:
        raise ConfigError(
            f"config key hdfs.user is {hdfs.user!r} but the environment's {ENV} is "
            f"{current!r}: the lake's Delta logs would be written as {current!r} and its "
            f"other files as {hdfs.user!r}; unset {ENV} or make the two the same"
        )
    os.environ[ENV] = hdfs.user
    return hdfs
