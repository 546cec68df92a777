"""One HDFS user per process: ``hdfs.user`` becomes ``HADOOP_USER_NAME``, which deltalake's HDFS
client (the Delta logs) and a JVM started later act as, or ``HADOOP_USER_NAME`` becomes the
user WebHDFS calls name (tests/integration/test_commit_hdfs.py checks the owners on a real
HDFS)."""

from __future__ import annotations

import json
import os

import pytest

from dicomlake.cli import EXIT_ERROR, main
from dicomlake.config import HdfsConfig
from dicomlake.errors import ConfigError
from dicomlake.storage.hdfs_user import ENV, one_user


@pytest.fixture(autouse=True)
def _no_user(monkeypatch):
    monkeypatch.setenv(ENV, "")  # so that the undo removes what a test sets after
    monkeypatch.delenv(ENV)


def test_the_configured_user_becomes_the_environments():
    assert one_user(HdfsConfig(user="svc")).user == "svc"
    assert os.environ[ENV] == "svc"


def test_without_a_configured_user_the_environments_is_every_clients(monkeypatch):
    monkeypatch.setenv(ENV, "svc")
    assert one_user(HdfsConfig()).user == "svc"
    assert os.environ[ENV] == "svc"


def test_with_neither_every_client_takes_the_login_name():
    assert one_user(HdfsConfig()) == HdfsConfig()
    assert ENV not in os.environ


def test_kerberos_is_left_alone(monkeypatch):
    config = HdfsConfig(user="svc", auth="kerberos", kerberos_principal="p@R")
    monkeypatch.setenv(ENV, "other")
    assert one_user(config) == config
    assert os.environ[ENV] == "other"


def test_the_same_user_in_both_is_accepted(monkeypatch):
    monkeypatch.setenv(ENV, "svc")
    assert one_user(HdfsConfig(user="svc")).user == "svc"


def test_another_user_in_the_environment_is_refused_naming_both(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(ENV, "other")
    with pytest.raises(ConfigError, match="hdfs.user is 'svc'.*HADOOP_USER_NAME is 'other'"):
        one_user(HdfsConfig(user="svc"))
    # The command refuses before it does anything
    monkeypatch.setenv("DICOMLAKE_HDFS_USER", "svc")
    keyring = tmp_path / "keyring.json"
    assert main(["keys", "init", "--keyring", str(keyring)]) == EXIT_ERROR
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "hdfs.user is 'svc'" in summary["error"] and "'other'" in summary["error"]
    assert not keyring.exists()
