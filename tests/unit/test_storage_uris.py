"""One spelling per place (`canonical_uri`), and a lake never inside its landing zone nor the
other way round (`overlap`): a run would ingest its own output, growing the lake each run."""

from __future__ import annotations

import os

import pytest

from dicomlake.config import HdfsConfig, load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import ConfigError, LakeError
from dicomlake.ingest.job import run_ingest
from dicomlake.lake.layout import LakeLayout
from dicomlake.storage import below, canonical_uri, overlap
from dicomlake.storage.local import LocalFileSystem


def test_a_local_place_has_one_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spellings = ["landing", "./landing/", f"{tmp_path}/landing", f"file://{tmp_path}/landing/"]
    spellings.append(f"file://{tmp_path}/x/../landing")
    assert {canonical_uri(s) for s in spellings} == {f"{tmp_path}/landing"}
    assert canonical_uri("hdfs://nn:8020/landing/") == "hdfs://nn:8020/landing"


@pytest.mark.parametrize(
    "spelling",
    [
        "hdfs://nn:8020/landing",
        "hdfs://NN:8020/landing/",
        "HDFS://nn:8020/data/../landing",
        "hdfs://nn:8020/./landing/.",
        "hdfs://nn:8020//landing",
    ],
)
def test_an_hdfs_place_has_one_spelling(spelling):
    """Hadoop compares scheme and authority without case, and resolves '.', '..' and '//'."""
    assert canonical_uri(spelling) == "hdfs://nn:8020/landing"


def test_an_hdfs_name_keeps_what_a_url_would_read_otherwise():
    assert canonical_uri("hdfs://nn/land#1/x?y/%41/") == "hdfs://nn/land#1/x?y/%41"
    assert overlap("hdfs://nn/lakes/l#2", "hdfs://nn/lakes/l#2/landing")
    assert not overlap("hdfs://nn/lakes/l#2", "hdfs://nn/lakes/l")


def test_a_file_uri_is_every_character_after_its_scheme_as_the_local_filesystem_reads_it(tmp_path):
    """'#', '?' and '%' are a local name's characters too, not a fragment, query or escape."""
    named = tmp_path / "land#1" / "x?y" / "%41"
    named.mkdir(parents=True)
    (named / "a.dcm").write_bytes(b"x")
    uri = f"file://{named}/"
    assert canonical_uri(uri) == str(named)
    assert canonical_uri(f"file://localhost{named}") == str(named)
    listed = [info.path for info in LocalFileSystem().list_entries(canonical_uri(uri))]
    assert listed == [str(named / "a.dcm")]


def test_a_file_uri_naming_another_host_is_refused():
    with pytest.raises(ConfigError, match="names the host 'nas1'.*file:///path"):
        canonical_uri("file://nas1/data/landing")


def test_a_lake_inside_a_landing_zone_whose_file_uri_holds_a_hash_is_refused(tmp_path):
    landing = tmp_path / "land#1"
    (landing / "lake").mkdir(parents=True)
    with pytest.raises(ConfigError, match="overlap"):
        run_ingest(
            None,
            f"file://{landing}",
            str(landing / "lake"),
            load_config(env={}),
            Keyring.generate(),
        )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("/data/landing", "/data/landing/lake", True),
        ("/data/landing/lake", "/data/landing", True),
        ("/data/landing", "/data/landing", True),
        ("/data/landing", "/data/landing-lake", False),  # a shared prefix is not a parent
        ("/data/landing", "/data/lake", False),
        ("hdfs://nn/landing", "hdfs://nn/landing/lake", True),
        ("hdfs://nn/landing", "hdfs://other/landing/lake", False),
        ("hdfs://nn/landing", "/landing/lake", False),
    ],
)
def test_overlap(a, b, expected):
    assert overlap(a, b) is expected


def test_a_link_does_not_hide_a_lake_inside_its_landing_zone(tmp_path):
    (tmp_path / "landing" / "lake").mkdir(parents=True)
    os.symlink(tmp_path / "landing" / "lake", tmp_path / "lake-link")
    assert overlap(str(tmp_path / "landing"), str(tmp_path / "lake-link"))


def test_two_names_of_one_namenode_overlap_where_the_config_tells_them_alike():
    one = {"localhost:8020": "http://127.0.0.1:9870", "127.0.0.1:8020": "http://127.0.0.1:9870"}
    two = {"localhost:8020": "http://127.0.0.1:9870", "127.0.0.1:8020": "http://10.0.0.2:9870"}
    landing, lake = "hdfs://localhost:8020/lakes/l2", "hdfs://127.0.0.1:8020/lakes/l2/sub"
    assert overlap(landing, lake, HdfsConfig(namenodes=one))
    assert not overlap(landing, lake, HdfsConfig(namenodes=two))
    assert not overlap(landing, lake)  # nothing tells them alike
    assert not overlap(landing, "hdfs://127.0.0.1:8020/lakes/l3", HdfsConfig(namenodes=one))


def test_an_ingest_into_its_landing_zone_named_by_another_host_name_is_refused():
    config = load_config(
        env={
            "DICOMLAKE_HDFS_NAMENODES": (
                '{"localhost:8020": "http://127.0.0.1:1", "127.0.0.1:8020": "http://127.0.0.1:1"}'
            )
        }
    )
    with pytest.raises(ConfigError, match="overlap"):  # before any call to the NameNode
        landing = "hdfs://localhost:8020/lakes/l2"
        run_ingest(None, landing, "hdfs://127.0.0.1:8020/lakes/l2", config, Keyring.generate())


@pytest.mark.parametrize("lake", ["landing/lake", "."])
def test_an_ingest_into_or_around_its_landing_zone_is_refused_before_any_write(
    tmp_path, monkeypatch, lake
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "a.dcm").write_bytes(b"x")
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="overlap") as raised:
        # No Spark context: the check comes before anything runs
        run_ingest(
            None,
            "file://" + str(tmp_path / "landing"),
            lake,
            load_config(env={}),
            Keyring.generate(),
        )
    assert str(tmp_path / "landing") in str(raised.value)
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/data/landing/a/b.dcm", "/data/landing", "a/b.dcm"),
        ("/data/landing/a/b.dcm", "/data/landing/", "a/b.dcm"),
        ("/data/landing", "/data/landing/", ""),
        ("/data/landing-2/b.dcm", "/data/landing", None),
        ("/data", "/data/landing", None),
        ("hdfs://nn/landing/x", "hdfs://nn/landing", "x"),
    ],
)
def test_below(path, root, expected):
    assert below(path, root) == expected


@pytest.mark.parametrize("path", ["/lakes/sp ace", "/lakes/pc%41", "/lakes/lk#1", "/lakes/é"])
def test_an_hdfs_lake_the_delta_client_would_name_otherwise_is_refused(path):
    """deltalake reads an HDFS table's URI as a URL: it would write or look elsewhere."""
    with pytest.raises(LakeError, match="on HDFS a lake's path may hold ASCII letters"):
        LakeLayout(f"hdfs://nn:8020{path}")
    if "%" not in path:
        assert LakeLayout(f"/tmp{path}").root == f"/tmp{path}"  # a local path is no URL
    assert LakeLayout("hdfs://nn:8020/lakes/imaging-2026_v1.0").root


def test_a_local_lake_whose_percent_the_delta_client_would_read_as_an_escape_is_refused():
    with pytest.raises(LakeError, match="may not hold '%'"):
        LakeLayout("/data/p%41")  # its tables would be made at /data/pA
