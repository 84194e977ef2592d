"""Where metrics go, without the client library: errors, defaults, the listen address, the file."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from efa_guard.errors import EfaGuardError

DEFAULT_TEXTFILE_DIRECTORY = Path("/var/lib/prometheus/node-exporter")
TEXTFILE_NAME = "efa_guard.prom"
DEFAULT_PORT = 9731


class MetricsError(EfaGuardError):
    """Metrics cannot be written or served; enforcement goes on without them."""


class TextfileError(MetricsError):
    """The textfile cannot be written; names the path and the cause."""


class ListenError(MetricsError):
    """The HTTP endpoint cannot listen; names the address and the cause."""


def default_textfile_directory() -> Path | None:
    """Debian's node_exporter textfile directory ($EFA_GUARD_TEXTFILE_DIR), if it exists here."""
    where = Path(os.environ.get("EFA_GUARD_TEXTFILE_DIR") or DEFAULT_TEXTFILE_DIRECTORY)
    return where if where.is_dir() else None


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:9731` or `[::1]:9731` -> (host, port); a ValueError says what is wrong.

    Port 0 binds any free port (tests); `Metrics.serve` returns the one bound.
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        example = f"127.0.0.1:{DEFAULT_PORT} or [::1]:{DEFAULT_PORT}"
        msg = f"{listen!r}: expected ADDRESS:PORT, e.g. {example}"
        raise ValueError(msg)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        msg = f"{listen!r}: an IPv6 address goes in brackets, e.g. [::1]:{DEFAULT_PORT}"
        raise ValueError(msg)
    if not port_text.isdigit() or int(port_text) > 65535:
        msg = f"{listen!r}: the port must be a number from 0 to 65535"
        raise ValueError(msg)
    return host, int(port_text)


def write_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path` and rename it over `path`."""
    fd = -1
    tmp = ""
    try:
        # node_exporter reads only *.prom: the temporary name must not end so.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # node_exporter runs as another user; our unit's umask is 077
        os.write(fd, data)
        os.close(fd)
        fd = -1
        Path(tmp).replace(path)
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        reason = os.strerror(e.errno) if e.errno else str(e)
        if e.errno == errno.ENOENT and not path.parent.is_dir():
            reason = "no such directory"
        msg = f"cannot write metrics to {path}: {reason}"
        raise TextfileError(msg) from e
    return path
