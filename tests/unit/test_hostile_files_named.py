"""A config, keyring, lock or keyring record that cannot be read is named in one line, never a
traceback: a directory, bytes that are not UTF-8, YAML that does not parse, JSON nested past
the parser's depth."""

from __future__ import annotations

import pytest

from dicomlake.cli import EXIT_ERROR, main
from dicomlake.config import load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import ConfigError, KeyringError
from dicomlake.keyring_file import save_keyring

NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.mkdir(), "Is a directory"),
        (lambda p: p.write_bytes(b"\xff\xfe"), "can't decode byte 0xff"),
    ],
)
def test_a_config_file_that_cannot_be_read_is_named(tmp_path, make, says):
    conf = tmp_path / "conf.yaml"
    make(conf)
    with pytest.raises(ConfigError, match=f"cannot read config file '{conf}': .*{says}"):
        load_config(conf, env={})


def test_an_environment_value_that_is_no_yaml_names_its_key():
    with pytest.raises(ConfigError, match="hdfs.namenodes has a bad value ': :'"):
        load_config(env={"DICOMLAKE_HDFS_NAMENODES": ": :"})


def test_a_keyring_nested_past_the_parsers_depth_is_named():
    with pytest.raises(KeyringError, match="keyring: not valid JSON"):
        Keyring.from_bytes(NESTED)


def test_a_lock_file_nested_past_the_parsers_depth_is_named_and_left(tmp_path, caplog):
    lake = tmp_path / "lake"
    (lake / "tables").mkdir(parents=True)
    (lake / "_lock").write_bytes(NESTED)
    assert main(["maintain", "--lake", str(lake)]) == EXIT_ERROR
    assert "_lock is not a lock record" in caplog.text
    assert (lake / "_lock").read_bytes() == NESTED


def test_a_keyring_record_nested_past_the_parsers_depth_is_named(tmp_path, caplog, config):
    lake, keyring = tmp_path / "lake", tmp_path / "k.json"
    (lake / "tables").mkdir(parents=True)
    (lake / "keyring-binding.json").write_bytes(NESTED)
    save_keyring(str(keyring), Keyring.generate(), config)
    assert (
        main(
            [
                "export",
                "--lake",
                str(lake),
                "--keyring",
                str(keyring),
                "--where",
                "true",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == EXIT_ERROR
    )
    assert "keyring-binding.json is not valid JSON" in caplog.text
