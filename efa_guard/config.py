"""TOML config -> a validated, frozen Config. Errors name the file, the key and the reason.

The checks live in config_validate (and its basic ones in config_checks).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from efa_guard.config_metrics import MetricsConfig, parse_metrics
from efa_guard.config_validate import DEFAULT_ALLOW_TCP, Validator
from efa_guard.errors import ConfigError
from efa_guard.limits import DEFAULT_LIMITS, Limits, scan, show
from efa_guard.policy import FAMILIES, Allowlist, Policy

DEFAULT_PATH = Path("/etc/efa-guard/efa-guard.toml")

Backend = Literal["auto", "nft", "legacy"]
BACKENDS: tuple[Backend, ...] = ("auto", "nft", "legacy")

_TOP_KEYS = frozenset(
    {"backend", "interface", "families", "chain", "daemon", "exposure", "metrics"}
)
DEFAULT_ALLOWLIST = Allowlist(tcp=DEFAULT_ALLOW_TCP)
DEFAULT_METRICS = MetricsConfig()


@dataclass(frozen=True)
class Daemon:
    """Tuning of `efa-guard run`; the defaults suit a production node."""

    interval: float = 10.0  # seconds between safety-net checks (the only signal on legacy)
    follow_up: float = 2.0  # re-check this long after an interface event (ifup hooks run late)
    contest_threshold: int = 5  # this many corrections ...
    contest_window: float = 10.0  # ... within this many seconds is a fight
    backoff_max: float = 5.0  # cap of the delay between corrections once the budget is spent
    cpu_budget: float = 0.10  # share of one core corrections may use over contest_window
    pause_max: float = 4 * 3600.0  # the longest `efa-guard pause --for` accepted


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    path: Path
    backend: Backend
    interface: str
    policy: Policy
    daemon: Daemon = Daemon()
    exposure: Allowlist = DEFAULT_ALLOWLIST
    metrics: MetricsConfig = DEFAULT_METRICS
    text: str = field(default="", compare=False, repr=False)  # the source, for last-known-good


def load(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> Config:
    """Read and validate a config file; raise ConfigError naming what is wrong.

    Time and memory are bounded by `limits` whatever the file holds: its size is checked
    before it is read, and validation is linear in it. Safe to call off the enforcement thread.
    """
    where = str(path)
    too_big = f"larger than the limit of {limits.max_bytes} bytes"
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size > limits.max_bytes:
                raise ConfigError(where, "(file)", too_big)
            raw = f.read(limits.max_bytes + 1)  # a pipe or /proc file has no size
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(where, "(file)", f"cannot read: {reason}") from e
    if len(raw) > limits.max_bytes:
        raise ConfigError(where, "(file)", too_big)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(where, "(file)", f"not UTF-8: {e}") from e
    return parse(text, path=path, limits=limits)


def parse(text: str, *, path: Path, limits: Limits = DEFAULT_LIMITS) -> Config:
    """Validate TOML text as a config, within `limits`."""
    where = str(path)
    if len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes:
        raise ConfigError(where, "(file)", f"larger than the limit of {limits.max_bytes} bytes")
    scan(text, where, limits)
    try:
        data = tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(where, "(syntax)", f"invalid TOML: {e}") from e
    except RecursionError as e:  # the scan bounds nesting far below this; kept as a backstop
        raise ConfigError(where, "(syntax)", "invalid TOML: nested too deep") from e
    return replace(_config(Validator(where, limits), data, path), text=text)


def _config(v: Validator, data: dict[str, object], path: Path) -> Config:
    v.keys(data, _TOP_KEYS, "")
    backend = v.string(data.get("backend", "auto"), "backend")
    if backend not in BACKENDS:
        raise v.fail("backend", f"must be one of {', '.join(BACKENDS)}, got {show(backend)}")
    interface = v.interface(v.required(data, "interface", ""), "interface")
    chains = v.chains(v.required(data, "chain", ""), interface)
    return Config(
        path=path,
        backend=backend,
        interface=interface,
        policy=Policy(chains, v.families(data.get("families", list(FAMILIES)))),
        daemon=Daemon(**v.daemon(data.get("daemon", {}))),  # type: ignore[arg-type]
        exposure=v.allowlist(data.get("exposure", {}), DEFAULT_ALLOW_TCP),
        metrics=parse_metrics(data.get("metrics", {}), v.fail),
    )
