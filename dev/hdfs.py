#!/usr/bin/env python3
"""A real single-node HDFS (NameNode + DataNode) on 127.0.0.1, from Hadoop's jars on Maven Central.

    dev/hdfs.py fetch            # download the Hadoop jars once (Maven), into the cache dir
    dev/hdfs.py start            # write config, format on first start, start both daemons, wait
    dev/hdfs.py status           # which daemons run, and the URLs
    dev/hdfs.py stop             # SIGTERM both, wait for them to exit
    dev/hdfs.py stop-datanode    # only the DataNode (to test a DataNode dying mid-job)
    dev/hdfs.py start-datanode   # and back
    dev/hdfs.py start-standby    # instead of start: a lone NameNode that stays standby (see below)

Environment (defaults in brackets; the ports are Hadoop's own plus 10000, so they do not clash
with a real Hadoop or the usual 9000/8020 services):

    DICOMLAKE_HADOOP_VERSION       Hadoop version to fetch [3.5.0, the client pyspark 4.2 bundles]
    DICOMLAKE_HADOOP_CACHE         jar cache [~/.cache/dicomlake/hadoop-<version>]
    DICOMLAKE_DEV_HDFS_DIR         run dir: config, metadata, blocks, logs [<repo>/.cache/hdfs]
    DICOMLAKE_DEV_HDFS_RPC_PORT    NameNode RPC, the hdfs:// port [18020]
    DICOMLAKE_DEV_HDFS_HTTP_PORT   NameNode HTTP, WebHDFS and /jmx [19870]
    DICOMLAKE_DEV_HDFS_DN_PORT     DataNode data transfer [19866]
    DICOMLAKE_DEV_HDFS_DN_HTTP_PORT  DataNode HTTP, where WebHDFS redirects reads and writes [19864]
    DICOMLAKE_DEV_HDFS_DN_IPC_PORT DataNode IPC [19867]
    DICOMLAKE_DEV_HDFS_HEAP        -Xmx of each daemon [512m]

The HDFS superuser (who may allow snapshots) is the user running the daemons. Stdlib only.

``start-standby`` starts, in its own run dir, the first NameNode of an HA nameservice
(``standby-ns``: two NameNodes, shared edits in the run dir) and neither the second nor a
failover controller, so it is never made active: a real standby NameNode, whose WebHDFS answers
every call with StandbyException, for testing client failover. It uses the NameNode ports; the
second NameNode's addresses, configured but never bound, are the DataNode HTTP and IPC ports.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from xml.sax.saxutils import escape

import _daemons as d

NAMENODE = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE = "org.apache.hadoop.hdfs.server.datanode.DataNode"

# HADOOP-19310: what Hadoop 3.4+'s own scripts pass to run on Java 17.
JAVA17_OPENS = [
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in (
        "java.io",
        "java.lang",
        "java.lang.reflect",
        "java.math",
        "java.net",
        "java.text",
        "java.util",
        "java.util.concurrent",
        "java.util.zip",
        "sun.security.util",
        "sun.security.x509",
    )
]

LOG4J = """\
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
# One line per block and per request is noise on a dev cluster.
log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN
log4j.logger.BlockStateChange=WARN
log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN
log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
"""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the commands need, read once from the environment."""

    version: str
    cache: Path
    run: Path
    rpc_port: int
    http_port: int
    dn_port: int
    dn_http_port: int
    dn_ipc_port: int
    heap: str
    user: str

    @classmethod
    def from_env(cls) -> Settings:
        version = os.environ.get("DICOMLAKE_HADOOP_VERSION") or "3.5.0"
        cache = os.environ.get("DICOMLAKE_HADOOP_CACHE") or (
            Path.home() / ".cache" / "dicomlake" / f"hadoop-{version}"
        )
        run = os.environ.get("DICOMLAKE_DEV_HDFS_DIR") or d.REPO / ".cache" / "hdfs"
        return cls(
            version=version,
            cache=Path(cache).expanduser().resolve(),
            run=Path(run).expanduser().resolve(),
            rpc_port=d.env_int("DICOMLAKE_DEV_HDFS_RPC_PORT", 18020),
            http_port=d.env_int("DICOMLAKE_DEV_HDFS_HTTP_PORT", 19870),
            dn_port=d.env_int("DICOMLAKE_DEV_HDFS_DN_PORT", 19866),
            dn_http_port=d.env_int("DICOMLAKE_DEV_HDFS_DN_HTTP_PORT", 19864),
            dn_ipc_port=d.env_int("DICOMLAKE_DEV_HDFS_DN_IPC_PORT", 19867),
            heap=os.environ.get("DICOMLAKE_DEV_HDFS_HEAP") or "512m",
            user=getpass.getuser(),
        )

    @property
    def uri(self) -> str:
        return f"hdfs://127.0.0.1:{self.rpc_port}"

    @property
    def webhdfs_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def jars(self) -> Path:
        return self.cache / "lib"

    @property
    def conf_dir(self) -> Path:
        return self.run / "conf"

    def log(self, daemon: str) -> Path:
        return self.run / "logs" / f"{daemon}.log"

    def pidfile(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"

    @property
    def marker(self) -> str:
        # Part of every daemon's command line (-Dhadoop.log.dir), so a pid is known to be ours.
        return str(self.run / "logs")


# --- fetch -------------------------------------------------------------------------------------


def fetch(s: Settings) -> None:
    """Copy hadoop-hdfs, hadoop-common, hadoop-hdfs-client and their runtime deps into the cache."""
    if complete(s):
        print(f"Hadoop {s.version} jars already in {s.jars}")
        return
    if shutil.which("mvn") is None:
        d.fail("mvn not found: install Maven 3 (it fetches the Hadoop jars from Maven Central)")
    # Per process, so two sessions fetching at once do not mix their files.
    staging = s.cache / f"lib.partial-{os.getpid()}"
    s.cache.mkdir(parents=True, exist_ok=True)
    print(f"fetching Hadoop {s.version} jars into {s.jars} ...", flush=True)
    started = time.monotonic()
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(Path(__file__).with_name("hadoop-pom.xml")),
        "dependency:copy-dependencies",
        f"-Dhadoop.version={s.version}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    if subprocess.run(cmd).returncode != 0:
        d.fail(
            f"Maven could not fetch Hadoop {s.version} (is it on Maven Central?): " + " ".join(cmd)
        )
    if complete(s):  # another process finished first
        shutil.rmtree(staging)
        return
    shutil.rmtree(s.jars, ignore_errors=True)
    staging.rename(s.jars)  # only a complete download becomes the cache
    (s.cache / ".complete").write_text(s.version + "\n")
    print(f"fetched {len(list(s.jars.glob('*.jar')))} jars in {time.monotonic() - started:.0f}s")


def complete(s: Settings) -> bool:
    """Whether the cache holds a finished download of this version."""
    marker = s.cache / ".complete"
    return marker.exists() and marker.read_text().strip() == s.version


# --- config ------------------------------------------------------------------------------------


def site_xml(props: dict[str, str]) -> str:
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
        for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


STANDBY_NS = "standby-ns"


def write_config(s: Settings, standby: bool = False) -> None:
    """core-site.xml, hdfs-site.xml and log4j.properties for both daemons, all on 127.0.0.1;
    with ``standby``, for the first NameNode of an HA nameservice (see ``start-standby``)."""
    s.conf_dir.mkdir(parents=True, exist_ok=True)
    core = {
        "fs.defaultFS": s.uri,
        "hadoop.tmp.dir": str(s.run / "tmp"),
        # Any user may act as any other through WebHDFS/RPC on this throwaway cluster.
        f"hadoop.proxyuser.{s.user}.hosts": "*",
        f"hadoop.proxyuser.{s.user}.groups": "*",
    }
    hdfs = {
        "dfs.namenode.name.dir": str(s.run / "name"),
        "dfs.datanode.data.dir": str(s.run / "data"),
        "dfs.namenode.rpc-address": f"127.0.0.1:{s.rpc_port}",
        "dfs.namenode.http-address": f"127.0.0.1:{s.http_port}",
        "dfs.datanode.address": f"127.0.0.1:{s.dn_port}",
        "dfs.datanode.http.address": f"127.0.0.1:{s.dn_http_port}",
        "dfs.datanode.ipc.address": f"127.0.0.1:{s.dn_ipc_port}",
        # WebHDFS redirects to the DataNode by the hostname it registered with: make it the
        # loopback address, never the machine's name (which may not resolve to 127.0.0.1).
        "dfs.datanode.hostname": "127.0.0.1",
        "dfs.client.use.datanode.hostname": "true",
        "dfs.namenode.datanode.registration.ip-hostname-check": "false",
        "dfs.webhdfs.enabled": "true",
        "dfs.replication": "1",
        "dfs.permissions.enabled": "false",
        # Leave safe mode as soon as the blocks are reported, not 30 s later.
        "dfs.namenode.safemode.extension": "0",
        # A stopped DataNode is declared dead after 2 * 10 s + 10 * 1 s, not 10.5 minutes.
        "dfs.heartbeat.interval": "1",
        "dfs.namenode.heartbeat.recheck-interval": "10000",
        # A client writing with the only DataNode gone must fail, not wait for a replacement.
        "dfs.client.block.write.replace-datanode-on-failure.enable": "false",
    }
    if standby:
        ns = STANDBY_NS
        del hdfs["dfs.namenode.rpc-address"], hdfs["dfs.namenode.http-address"]
        core["fs.defaultFS"] = f"hdfs://{ns}"
        hdfs.update(
            {
                "dfs.nameservices": ns,
                f"dfs.ha.namenodes.{ns}": "nn1,nn2",
                # Both are on 127.0.0.1: the NameNode cannot tell from its addresses which it is
                "dfs.ha.namenode.id": "nn1",
                f"dfs.namenode.rpc-address.{ns}.nn1": f"127.0.0.1:{s.rpc_port}",
                f"dfs.namenode.http-address.{ns}.nn1": f"127.0.0.1:{s.http_port}",
                f"dfs.namenode.rpc-address.{ns}.nn2": f"127.0.0.1:{s.dn_ipc_port}",
                f"dfs.namenode.http-address.{ns}.nn2": f"127.0.0.1:{s.dn_http_port}",
                "dfs.namenode.shared.edits.dir": (s.run / "shared-edits").as_uri(),
                "dfs.ha.fencing.methods": "shell(/bin/true)",
            }
        )
    (s.conf_dir / "core-site.xml").write_text(site_xml(core))
    (s.conf_dir / "hdfs-site.xml").write_text(site_xml(hdfs))
    (s.conf_dir / "log4j.properties").write_text(LOG4J)
    # HttpServer2 finds its web apps as classpath resources, which the 3.5.0 jars on Maven
    # Central leave out; empty ones suffice, since WebHDFS and /jmx are servlets added in code.
    for app in ("hdfs", "datanode", "static"):
        (s.conf_dir / "webapps" / app).mkdir(parents=True, exist_ok=True)


def java_cmd(s: Settings, main: str, *args: str) -> list[str]:
    java = shutil.which(
        "java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin")
    ) or shutil.which("java")
    if java is None:
        d.fail("java not found: install Java 17 or set JAVA_HOME")
    return [
        java,
        f"-Xmx{s.heap}",
        *JAVA17_OPENS,
        f"-Dhadoop.log.dir={s.marker}",
        f"-Dhadoop.home.dir={s.cache}",
        f"-Dhadoop.id.str={s.user}",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dlog4j.configuration=file:{s.conf_dir / 'log4j.properties'}",
        "-cp",
        f"{s.conf_dir}:{s.jars}/*",
        main,
        *args,
    ]


# --- state checks ------------------------------------------------------------------------------


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


def namenode_state(s: Settings) -> dict:
    """FSState ("Operational" once safe mode is off) and NumLiveDataNodes, from the NN's /jmx."""
    data = get_json(f"{s.webhdfs_url}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState")
    beans = (data or {}).get("beans") or [{}]
    return beans[0]


def webhdfs_roundtrip(s: Settings) -> bool:
    """Write, read back and delete a small file through WebHDFS, as HdfsCLI would."""
    base = f"{s.webhdfs_url}/webhdfs/v1/tmp/.dicomlake-dev-probe"
    payload = f"probe {time.time()}".encode()
    try:
        req = urllib.request.Request(
            f"{base}?op=CREATE&overwrite=true&user.name={s.user}", method="PUT"
        )
        try:
            urllib.request.urlopen(req, timeout=10).close()
            return False  # the NameNode always redirects a CREATE to a DataNode
        except urllib.error.HTTPError as exc:
            if exc.code != 307:
                return False
            location = exc.headers["Location"]
        put = urllib.request.Request(
            location,
            data=payload,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(put, timeout=10).close()
        with urllib.request.urlopen(f"{base}?op=OPEN&user.name={s.user}", timeout=10) as resp:
            ok = resp.read() == payload
        urllib.request.urlopen(
            urllib.request.Request(f"{base}?op=DELETE&user.name={s.user}", method="DELETE"),
            timeout=10,
        ).close()
        return ok
    except OSError:
        return False


def running(s: Settings, daemon: str, main: str) -> int | None:
    return d.live_pid(s.pidfile(daemon), s.marker, main)


def died(s: Settings, daemons: dict[str, str]) -> str | None:
    for daemon, main in daemons.items():
        if running(s, daemon, main) is None:
            return f"the {daemon} exited; end of {s.log(daemon)}:\n{d.log_tail(s.log(daemon))}"
    return None


def wait_ready(s: Settings, daemons: dict[str, str], timeout: float = 120.0) -> None:
    """Wait until safe mode is off, a DataNode is live and a WebHDFS write/read works."""

    def ready() -> bool:
        state = namenode_state(s)
        return (
            state.get("FSState") == "Operational"
            and state.get("NumLiveDataNodes", 0) >= 1
            and webhdfs_roundtrip(s)
        )

    d.wait_for(
        ready,
        what="HDFS to leave safe mode and serve a WebHDFS write and read",
        timeout=timeout,
        alive=lambda: died(s, daemons),
        interval=0.5,
    )


# --- commands ----------------------------------------------------------------------------------


def start_daemon(s: Settings, daemon: str, main: str) -> None:
    pid = d.spawn(
        java_cmd(s, main), log=s.log(daemon), pidfile=s.pidfile(daemon), markers=(s.marker, main)
    )
    print(f"{daemon}: started (pid {pid}, log {s.log(daemon)})")


def format_namenode(s: Settings) -> None:
    if (s.run / "name" / "current" / "VERSION").exists():
        return
    print("formatting a new NameNode ...", flush=True)
    log = s.log("format")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        rc = subprocess.run(
            java_cmd(
                s, NAMENODE, "-format", "-nonInteractive", "-force", "-clusterid", "dicomlake-dev"
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        ).returncode
    if rc != 0:
        d.fail(f"NameNode -format failed (exit {rc}); end of {log}:\n{d.log_tail(log)}")


def ports_of(s: Settings, daemon: str) -> dict[str, tuple[int, str]]:
    v = "DICOMLAKE_DEV_HDFS_"
    if daemon == "namenode":
        return {
            "NameNode RPC": (s.rpc_port, v + "RPC_PORT"),
            "NameNode HTTP": (s.http_port, v + "HTTP_PORT"),
        }
    return {
        "DataNode": (s.dn_port, v + "DN_PORT"),
        "DataNode HTTP": (s.dn_http_port, v + "DN_HTTP_PORT"),
        "DataNode IPC": (s.dn_ipc_port, v + "DN_IPC_PORT"),
    }


def start(s: Settings, daemons: dict[str, str]) -> None:
    """Start the given daemons (those not running yet), then wait until HDFS serves requests."""
    started = time.monotonic()
    fetch(s)
    todo = {k: v for k, v in daemons.items() if running(s, k, v) is None}
    for daemon in daemons.keys() - todo.keys():
        print(f"{daemon}: already running (pid {running(s, daemon, daemons[daemon])})")
    d.check_ports({label: port for daemon in todo for label, port in ports_of(s, daemon).items()})
    s.run.mkdir(parents=True, exist_ok=True)
    if "namenode" in todo:
        write_config(s)
        format_namenode(s)
    elif not (s.conf_dir / "hdfs-site.xml").exists():
        d.fail(f"no config in {s.conf_dir}: run `dev/hdfs.py start` first")
    for daemon, main in todo.items():  # both JVMs boot in parallel; the DataNode retries the NN
        start_daemon(s, daemon, main)
    wait_ready(s, {"namenode": NAMENODE, "datanode": DATANODE})
    print(f"HDFS ready in {time.monotonic() - started:.1f}s")
    print_urls(s)


def start_standby(s: Settings) -> None:
    """Start the lone HA NameNode of ``start-standby`` and wait until it reports standby."""
    fetch(s)
    if running(s, "namenode", NAMENODE) is None:
        d.check_ports(ports_of(s, "namenode"))
        s.run.mkdir(parents=True, exist_ok=True)
        write_config(s, standby=True)
        format_namenode(s)
        start_daemon(s, "namenode", NAMENODE)
    url = f"{s.webhdfs_url}/jmx?qry=Hadoop:service=NameNode,name=NameNodeStatus"
    d.wait_for(
        lambda: ((get_json(url) or {}).get("beans") or [{}])[0].get("State") == "standby",
        what="the NameNode to serve as a standby",
        timeout=120.0,
        alive=lambda: died(s, {"namenode": NAMENODE}),
        interval=0.5,
    )
    print(f"standby NameNode of hdfs://{STANDBY_NS} ready")
    print_urls(s)


def stop(s: Settings, daemons: dict[str, str]) -> None:
    for daemon, main in daemons.items():
        d.terminate(s.pidfile(daemon), (s.marker, main), daemon)


def status(s: Settings) -> int:
    up = 0
    for daemon, main in (("namenode", NAMENODE), ("datanode", DATANODE)):
        pid = running(s, daemon, main)
        print(f"{daemon}: " + (f"running (pid {pid})" if pid else "not running"))
        up += pid is not None
    if up:
        state = namenode_state(s)
        print(
            f"state: {state.get('FSState', 'unknown')}, "
            f"live datanodes: {state.get('NumLiveDataNodes', '?')}"
        )
        print_urls(s)
    return 0 if up == 2 else 3


def print_urls(s: Settings) -> None:
    print(f"hdfs:    {s.uri}")
    print(f"webhdfs: {s.webhdfs_url}")
    print(f"run dir: {s.run}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument(
        "command",
        choices=[
            "fetch",
            "start",
            "stop",
            "status",
            "start-datanode",
            "stop-datanode",
            "start-standby",
        ],
    )
    args = parser.parse_args(argv)
    s = Settings.from_env()
    both = {"namenode": NAMENODE, "datanode": DATANODE}
    if args.command == "fetch":
        fetch(s)
    elif args.command == "start":
        start(s, both)
    elif args.command == "stop":
        stop(s, {"datanode": DATANODE, "namenode": NAMENODE})  # DataNode first: no reconnect noise
    elif args.command == "status":
        return status(s)
    elif args.command == "start-datanode":
        if running(s, "namenode", NAMENODE) is None:
            d.fail("the NameNode is not running: use `dev/hdfs.py start`")
        start(s, {"datanode": DATANODE})
    elif args.command == "stop-datanode":
        stop(s, {"datanode": DATANODE})
    elif args.command == "start-standby":
        start_standby(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
