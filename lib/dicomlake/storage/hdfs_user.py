"""The one HDFS user a dicomlake process acts as, whichever client writes.

WebHDFS calls (packs, table fragments, the lock) name ``hdfs.user`` themselves. deltalake's
native HDFS client, which writes the tables' Delta logs, and the Hadoop client of a JVM started
after this take their user from ``HADOOP_USER_NAME`` under simple authentication, or else from
the login name: without this, a lake's logs and its data files would be written by two users,
and a lake writable by ``hdfs.user`` alone would take a run's files but refuse its commits.
"""

from __future__ import annotations

import os

from dicomlake.config import HdfsConfig
from dicomlake.errors import ConfigError

ENV = "HADOOP_USER_NAME"


def act_as_configured_user(hdfs: HdfsConfig) -> None:
    """Make ``hdfs.user`` this process's user for every HDFS client (see the module doc).

    Does nothing under Kerberos (the ticket names the user) or without ``hdfs.user``. A
    ``HADOOP_USER_NAME`` already naming another user is a ConfigError naming both.
    """
    if hdfs.auth != "simple" or not hdfs.user:
        return
    current = os.environ.get(ENV)
    if current and current != hdfs.user:
        raise ConfigError(
            f"config key hdfs.user is {hdfs.user!r} but the environment's {ENV} is "
            f"{current!r}: the lake's Delta logs would be written as {current!r} and its "
            f"other files as {hdfs.user!r}; unset {ENV} or make the two the same"
        )
    os.environ[ENV] = hdfs.user
