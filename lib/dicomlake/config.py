"""One frozen, typed config: a YAML file merged with ``DICOMLAKE_<SECTION>_<KEY>`` variables.

Precedence, lowest first: the defaults below, the YAML file (``--conf``, else ``$DICOMLAKE_CONF``),
then environment variables. Every error names the key and the bad value.

>>> cfg = load_config(env={"DICOMLAKE_INGEST_ERROR_THRESHOLD": "0.2"})
>>> cfg.ingest.error_threshold
0.2
"""

from __future__ import annotations

import dataclasses
import os
import typing
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dicomlake.errors import ConfigError

ENV_PREFIX = "DICOMLAKE_"
MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "dicomlake"
    # Extra Spark properties, applied when dicomlake builds the session itself.
    conf: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class HdfsConfig:
    # The WebHDFS address of each cluster, by the authority of its URIs (hdfs://<authority>/path):
    # a nameservice or host:port. Several addresses, ';'-separated, are HA NameNodes: a call that
    # finds one down or standby goes on to the next. An hdfs:// URI whose authority is not here
    # is a ConfigError, never sent to another cluster.
    namenodes: dict[str, str] = dataclasses.field(default_factory=dict)
    user: str = ""
    auth: str = "simple"  # simple | kerberos
    kerberos_principal: str = ""
    timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        _choice("hdfs.auth", self.auth, ("simple", "kerberos"))
        for authority, urls in self.namenodes.items():
            key = f"hdfs.namenodes.{authority}"
            if not authority or any(c in authority for c in "/?#@ "):
                raise ConfigError(
                    f"config key {key} names a bad authority {authority!r}: "
                    "write the <nameservice> or <host>:<port> of hdfs://<authority>/ URIs"
                )
            for url in urls.split(";"):
                parts = urllib.parse.urlsplit(url.strip())
                if (
                    parts.scheme not in ("http", "https")
                    or not parts.netloc
                    or parts.path.strip("/")
                ):
                    raise ConfigError(
                        f"config key {key} has a bad value {urls!r}: expected WebHDFS addresses "
                        "http(s)://<host>:<port>, ';'-separated for HA NameNodes"
                    )

    def same_cluster(self, a: str, b: str) -> bool:
        """Whether two ``hdfs://`` authorities name one cluster: the same (as Hadoop compares
        them, without case), or ``hdfs.namenodes`` gives them a WebHDFS address in common
        (``localhost:8020`` and ``127.0.0.1:8020``, say)."""
        if a.lower() == b.lower():
            return True
        try:
            return bool(set(self.webhdfs_urls(a)) & set(self.webhdfs_urls(b)))
        except ConfigError:  # one is not configured: no address tells them alike
            return False

    def webhdfs_urls(self, authority: str) -> tuple[str, ...]:
        """The WebHDFS addresses serving ``hdfs://<authority>/``, in failover order."""
        for key, urls in self.namenodes.items():
            if key.lower() == authority.lower():
                return tuple(u.strip().rstrip("/") for u in urls.split(";"))
        known = ", ".join(sorted(self.namenodes)) or "none"
        raise ConfigError(
            f"no WebHDFS address for hdfs://{authority}/: add it to config key hdfs.namenodes "
            f"(hdfs: {{namenodes: {{{authority or '<authority>'!r}: http://<namenode>:9870}}}}); "
            f"configured: {known}"
        )


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    # Bytes of input per Spark task (files are bin-packed by size, not by count).
    task_bytes: int = 256 * MiB
    # Larger files are quarantined as too_large.
    max_file_bytes: int = 64 * 1024 * MiB
    # Larger files are streamed: hashed in one pass, then split and stored chunk by chunk.
    stream_bytes: int = 256 * MiB
    # The most of a streamed file a task holds at once: a larger header, frame (or frames that
    # cannot be cut apart), trailing part or deflated file is quarantined as too_large.
    max_chunk_bytes: int = 256 * MiB
    # A rejected file keeps an encrypted copy in quarantine/ up to this size; a larger one
    # keeps its errors row only.
    quarantine_max_bytes: int = 64 * MiB
    # A run fails (exit code 3) when more than this share of its inputs is quarantined.
    error_threshold: float = 0.5
    # Files modified this recently (by the filesystem's clock) are left for the next run.
    settle_seconds: float = 0.0
    # Off: a symbolic link in the landing zone is recorded as skipped (symlink), never read.
    # On: a link to a file or directory inside the landing zone is read as its target.
    follow_symlinks: bool = False

    def __post_init__(self) -> None:
        _positive("ingest.task_bytes", self.task_bytes)
        _positive("ingest.max_file_bytes", self.max_file_bytes)
        _positive("ingest.stream_bytes", self.stream_bytes)
        _positive("ingest.max_chunk_bytes", self.max_chunk_bytes)
        _between("ingest.quarantine_max_bytes", self.quarantine_max_bytes, 0, 1 << 62)
        _between("ingest.error_threshold", self.error_threshold, 0.0, 1.0)
        _between("ingest.settle_seconds", self.settle_seconds, 0.0, 86400.0 * 7)


@dataclasses.dataclass(frozen=True)
class PixelsConfig:
    codec: str = "auto"
    # Decode every chunk after encoding and compare before it is written.
    verify: bool = True
    pack_bytes: int = 128 * MiB
    # Threads that encode the frames of a file too big to be held (16 MiB) at once, the task's
    # own among them: the codecs release the GIL, so it takes a second core where one is free.
    encode_threads: int = 2

    def __post_init__(self) -> None:
        _positive("pixels.pack_bytes", self.pack_bytes)
        _between("pixels.encode_threads", self.encode_threads, 1, 64)


@dataclasses.dataclass(frozen=True)
class KeysConfig:
    keyring: str = "data/keyring.json"


@dataclasses.dataclass(frozen=True)
class SnapshotConfig:
    # The next incremental scans from watermark - lag_seconds, to catch clock skew and late closes.
    lag_seconds: float = 300.0
    keep_daily: int = 7
    keep_weekly: int = 4

    def __post_init__(self) -> None:
        _between("snapshot.lag_seconds", self.lag_seconds, 0.0, 86400.0 * 30)
        _between("snapshot.keep_daily", self.keep_daily, 1, 10_000)
        _between("snapshot.keep_weekly", self.keep_weekly, 0, 10_000)


MAX_STALE_SECONDS = 86400.0
"""The longest ``lock.stale_seconds``: a day."""


@dataclasses.dataclass(frozen=True)
class LockConfig:
    # A lake's or backup's lock whose heartbeat is older than this is stale: its holder died,
    # and the next command takes it over. Longer than any pause of a live holder (GC, network).
    stale_seconds: float = 600.0
    # How often a holder rewrites its heartbeat; at most a third of stale_seconds.
    heartbeat_seconds: float = 30.0

    def __post_init__(self) -> None:
        _between("lock.heartbeat_seconds", self.heartbeat_seconds, 0.1, 3600.0)
        # Rounded: 3 x 0.2 is 0.6000000000000001 in binary floating point
        low = round(3 * self.heartbeat_seconds, 6)
        _between("lock.stale_seconds", self.stale_seconds, low, MAX_STALE_SECONDS)


@dataclasses.dataclass(frozen=True)
class MaintainConfig:
    # Compaction rewrites a partition's small files into files of about this size.
    target_file_bytes: int = 128 * MiB
    # Files a compaction replaced are deleted this long after (time travel reaches this far),
    # counted in whole seconds rounded up; the tables' Delta retention properties follow it.
    retention_hours: float = 168.0

    def __post_init__(self) -> None:
        _positive("maintain.target_file_bytes", self.target_file_bytes)
        _between("maintain.retention_hours", self.retention_hours, 1.0, 24.0 * 3650)


@dataclasses.dataclass(frozen=True)
class DeidConfig:
    # Analyst tables get pseudonyms (PS3.15 E.1-1); identified values go to restricted/.
    enabled: bool = True
    # keep: dates as they are; shift: every date of a patient moves back by 1..max_shift_days.
    dates: str = "keep"
    max_shift_days: int = 365
    # Keep sex, age, size, weight (Retain Patient Characteristics Option).
    keep_patient_characteristics: bool = True
    # Keep study/series description and protocol name (free text that may name someone).
    keep_descriptors: bool = False
    # Keep the few numeric private attributes of PS3.15 Table E.3.10-1 (diffusion b-values).
    safe_private: bool = True
    # Ages of this many years or more are written as this number (HIPAA Safe Harbor: 90).
    age_cap_years: int = 90

    def __post_init__(self) -> None:
        _choice("deid.dates", self.dates, ("keep", "shift"))
        _between("deid.max_shift_days", self.max_shift_days, 1, 3650)
        _between("deid.age_cap_years", self.age_cap_years, 1, 200)


@dataclasses.dataclass(frozen=True)
class Config:
    spark: SparkConfig = dataclasses.field(default_factory=SparkConfig)
    hdfs: HdfsConfig = dataclasses.field(default_factory=HdfsConfig)
    ingest: IngestConfig = dataclasses.field(default_factory=IngestConfig)
    pixels: PixelsConfig = dataclasses.field(default_factory=PixelsConfig)
    keys: KeysConfig = dataclasses.field(default_factory=KeysConfig)
    snapshot: SnapshotConfig = dataclasses.field(default_factory=SnapshotConfig)
    lock: LockConfig = dataclasses.field(default_factory=LockConfig)
    deid: DeidConfig = dataclasses.field(default_factory=DeidConfig)
    maintain: MaintainConfig = dataclasses.field(default_factory=MaintainConfig)

    def __post_init__(self) -> None:
        # A live snapshot may copy a file up to lag_seconds after the listing that named it.
        if self.maintain.retention_hours * 3600 < self.snapshot.lag_seconds:
            raise ConfigError(
                f"maintain.retention_hours={self.maintain.retention_hours} is shorter than "
                f"snapshot.lag_seconds={self.snapshot.lag_seconds}: vacuum could delete files "
                "a snapshot still reads"
            )


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Build the config from defaults, an optional YAML file and ``DICOMLAKE_*`` variables."""
    env = os.environ if env is None else env
    if path is None and env.get(ENV_PREFIX + "CONF"):
        path = env[ENV_PREFIX + "CONF"]
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONF":
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(
                f"unknown config variable {name}={value!r}: "
                f"sections are {', '.join(sorted(sections))}"
            )
        raw.setdefault(section, {})[rest[len(section) + 1 :]] = _EnvValue(value)
    unknown = set(raw) - set(sections)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"unknown config section {key!r} (value {raw[key]!r}): "
            f"sections are {', '.join(sorted(sections))}"
        )
    built = {}
    for name, field in sections.items():
        section_raw = raw.get(name) or {}
        if not isinstance(section_raw, dict):
            raise ConfigError(f"config section {name!r} must be a mapping, got {section_raw!r}")
        built[name] = _build_section(name, field.type, section_raw)
    return Config(**built)


class _EnvValue(str):
    """A value that came from an environment variable, so it is parsed from text."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, unreadable, not UTF-8
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}"
        )
    return data


# Keys of earlier versions, and what to write instead.
_REPLACED = {
    "hdfs.webhdfs_url": "map each hdfs:// authority to its WebHDFS address in hdfs.namenodes, "
    "e.g. hdfs: {namenodes: {'nn.example.org:8020': 'http://nn.example.org:9870'}} "
    "(env: DICOMLAKE_HDFS_NAMENODES='{nn.example.org:8020: http://nn.example.org:9870}')",
}


def _build_section(section: str, cls_name: Any, values: dict[str, Any]) -> Any:
    cls = globals()[cls_name] if isinstance(cls_name, str) else cls_name
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if f"{section}.{key}" in _REPLACED:
            raise ConfigError(
                f"config key {section}.{key} (value {value!r}) is no longer read: "
                + _REPLACED[f"{section}.{key}"]
            )
        if key not in fields:
            raise ConfigError(
                f"unknown config key {section}.{key} (value {value!r}): "
                f"known keys are {', '.join(sorted(fields))}"
            )
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value)
    return cls(**kwargs)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    from_env = isinstance(value, _EnvValue)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if from_env and value.lower() in ("1", "true", "yes", "on"):
                return True
            if from_env and value.lower() in ("0", "false", "no", "off"):
                return False
        elif hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if from_env:
                return int(value)
        elif hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if from_env:
                return float(value)
        elif hint is str:
            if isinstance(value, str):
                return str(value)
        elif origin is dict:
            parsed = yaml.safe_load(value) if from_env else value
            if isinstance(parsed, dict):
                return {str(k): str(v) for k, v in parsed.items()}
    except (ValueError, yaml.YAMLError):
        pass
    raise ConfigError(f"config key {key} has a bad value {value!r}: expected {_name(hint)}")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"config key {key} has a bad value {value!r}: must be > 0")


def _between(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(
            f"config key {key} has a bad value {value!r}: must be between {low} and {high}"
        )


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"config key {key} has a bad value {value!r}: must be one of {', '.join(choices)}"
        )
