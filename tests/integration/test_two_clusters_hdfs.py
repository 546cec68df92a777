"""A lake on one real HDFS, its backup on a second one: every byte lands on the cluster its URI
names. Where the bytes are is checked with each cluster's own WebHDFS, called here directly (plain
HTTP, not dicomlake), so the routing under test does not also check itself. And NameNode failover:
a cluster whose first listed NameNode is down (a closed port) or a real standby."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from snapshot_helpers import blob

from dicomlake.config import HdfsConfig, load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import ConfigError
from dicomlake.keyring_file import save_keyring
from dicomlake.storage import filesystem_for
from dicomlake.storage.hdfs import WebHdfsFileSystem

if TYPE_CHECKING:
    from conftest import HdfsCluster

pytestmark = pytest.mark.hdfs

FILES = {
    "tables/instances/Modality=CT/study_year=2020/part-r1-0.parquet": blob("i", 5000),
    "tables/runs/r1.parquet": blob("r1"),
    "pixels/r1/pack-a.pack": blob("a", 300_000),
    "quarantine/r1/dup.dcm": blob("a", 300_000),
}


REPO = Path(__file__).resolve().parents[2]


def _listing(cluster: HdfsCluster, path: str) -> dict[str, int] | None:
    """{relative path: size} of every file below ``path`` by LISTSTATUS; None if it is missing."""
    url = f"{cluster.webhdfs_url}/webhdfs/v1{path}"
    resp = requests.get(url, params={"op": "LISTSTATUS", "user.name": "dicomlake"}, timeout=30)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    out: dict[str, int] = {}
    for st in resp.json()["FileStatuses"]["FileStatus"]:
        name = st["pathSuffix"]
        if st["type"] == "DIRECTORY":
            below = _listing(cluster, f"{path}/{name}") or {}
            out.update({f"{name}/{rel}": size for rel, size in below.items()})
        else:
            out[name] = st["length"]
    return out


def _sha256(cluster: HdfsCluster, path: str) -> str:
    """SHA-256 of a file read by WebHDFS OPEN (following the redirect to the DataNode)."""
    url = f"{cluster.webhdfs_url}/webhdfs/v1{path}"
    resp = requests.get(url, params={"op": "OPEN", "user.name": "dicomlake"}, timeout=30)
    resp.raise_for_status()
    return hashlib.sha256(resp.content).hexdigest()


def _dicomlake(*args: str, conf: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "dicomlake.cli", *args, "--conf", str(conf)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_snapshot_of_a_lake_on_one_cluster_into_a_backup_on_another(
    tmp_path, hdfs_cluster, hdfs_cluster_b
) -> None:
    a, b = hdfs_cluster, hdfs_cluster_b
    run = f"/tests/{uuid.uuid4().hex}"
    lake, backup = f"{a.uri}{run}/lake", f"{b.uri}{run}/backup"
    restored = f"{a.uri}{run}/restored"
    fs = WebHdfsFileSystem(a.hdfs_config_with(b))
    for rel, data in FILES.items():
        fs.write_bytes(f"{lake}/{rel}", data)
    conf = tmp_path / "two.yaml"
    conf.write_text(
        "spark:\n  master: local[1]\n"
        "snapshot:\n  lag_seconds: 0\n"
        "hdfs:\n  namenodes:\n"
        f"    '{a.authority}': {a.webhdfs_url}\n"
        f"    '{b.authority}': {b.webhdfs_url}\n"
    )

    keyring = tmp_path / "keyring.json"
    save_keyring(str(keyring), Keyring.generate("symmetric"), load_config(env={}))
    snap = _dicomlake(
        "snapshot", "--lake", lake, "--backup", backup, "--mode", "full", "--keyring", str(keyring),
        conf=conf,
    )  # fmt: skip

    # The objects (content-addressed, identical content once) and the manifest are on B only.
    shas = {hashlib.sha256(d).hexdigest() for d in FILES.values()}
    on_b = _listing(b, f"{run}/backup") or {}
    objects = {rel for rel in on_b if rel.startswith("objects/")}
    assert objects == {f"objects/{s[:2]}/{s[2:]}" for s in shas}
    assert f"manifests/{snap['snapshot_id']}.parquet" in on_b
    assert _listing(a, f"{run}/backup") is None
    assert _listing(b, f"{run}/lake") is None
    assert _listing(a, f"{run}/lake") == {rel: len(d) for rel, d in FILES.items()}

    _dicomlake(
        "restore", "--backup", backup, "--snapshot", snap["snapshot_id"], "--target", restored,
        "--keyring", str(keyring), conf=conf,
    )  # fmt: skip

    assert _listing(a, f"{run}/restored") == {rel: len(d) for rel, d in FILES.items()}
    for rel, data in FILES.items():
        assert _sha256(a, f"{run}/restored/{rel}") == hashlib.sha256(data).hexdigest()
    assert _listing(b, f"{run}/restored") is None
    fs.delete(f"{a.uri}{run}", recursive=True)
    fs.delete(f"{b.uri}{run}", recursive=True)


def test_an_hdfs_uri_of_no_configured_cluster_is_refused(hdfs_cluster) -> None:
    with pytest.raises(ConfigError, match=r"hdfs://backup-nn/.*hdfs\.namenodes"):
        filesystem_for("hdfs://backup-nn/dicomlake", hdfs_cluster.hdfs_config)
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    with pytest.raises(ConfigError, match="backup-nn"):
        fs.write_bytes("hdfs://backup-nn/dicomlake/x", b"never sent")


def _closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("first", ["down", "standby"])
def test_calls_fail_over_from_a_down_or_standby_namenode_to_the_next(
    request, hdfs_cluster, hdfs_root, first
) -> None:
    if first == "standby":
        dead = request.getfixturevalue("standby_namenode")
        probe = requests.get(f"{dead}/webhdfs/v1/?op=GETFILESTATUS&user.name=x", timeout=30)
        assert probe.json()["RemoteException"]["exception"] == "StandbyException"
    else:
        dead = f"http://127.0.0.1:{_closed_port()}"
    config = HdfsConfig(
        namenodes={hdfs_cluster.authority: f"{dead};{hdfs_cluster.webhdfs_url}"},
        timeout_seconds=10,
    )
    fs = WebHdfsFileSystem(config)
    # This standby has no DataNode, so it cannot place a CREATE's redirect (an IOException, not
    # StandbyException); in an HA cluster the DataNodes report to both NameNodes. Its files are
    # written straight to the active one; every other call goes through the standby first.
    writer = WebHdfsFileSystem(hdfs_cluster.hdfs_config) if first == "standby" else fs
    writer.write_bytes(f"{hdfs_root}/ha/f", b"through the second")
    with writer.open_write(f"{hdfs_root}/ha/g") as out:
        out.write(b"streamed")
    writer.write_bytes(f"{hdfs_root}/ha/gone", b"x")
    assert fs.read(f"{hdfs_root}/ha/f") == b"through the second"
    with fs.open_read(f"{hdfs_root}/ha/g") as stream:
        assert stream.read() == b"streamed"
    fs.makedirs(f"{hdfs_root}/ha/d")
    fs.publish(f"{hdfs_root}/ha/g", f"{hdfs_root}/ha/d/g")
    fs.delete(f"{hdfs_root}/ha/gone")
    assert [f.path for f in fs.list_files(f"{hdfs_root}/ha")] == [
        f"{hdfs_root}/ha/f",
        f"{hdfs_root}/ha/d/g",
    ]
    path = hdfs_root[len(hdfs_cluster.uri) :]
    assert _listing(hdfs_cluster, f"{path}/ha") == {"f": 18, "d/g": 8}
