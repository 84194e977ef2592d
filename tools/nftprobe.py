"""nf_tables commits seen from inside a sandbox namespace: the kernel's floor, and who committed.

Issue 12 bounds the daemon's nft tamper->restored latency by a floor measured in the same run:
the delivery of a ruleset event plus one ``iptables-nft-restore --noflush`` of the transaction
the daemon would run.  Two child modes of ``tools/bench_goals.py`` run inside the guard
namespace (``ip netns exec``) and do the measuring:

* :func:`measure_floor` (``--child-floor``): **delivery** = from just before this process
  sends a one-table nf_tables batch (create, then delete, a scratch table ``efa_bench_probe``:
  each a real commit) to the moment a thread blocked on a socket subscribed to NFNLGRP_NFTABLES
  (efa-guard's own ``subscribe()``) holds that commit's NEWGEN; **restore** = one
  ``Iptables(kind).restore(txn)`` (efa-guard's runner, whatever it runs) of the transactions
  efa-guard plans for the policy's first chain flushed, narrowed to ipv4 as the daemon narrows
  a check to the family of the event.  The flush before each run is not timed.
* :func:`watch_commits` (``--child-gens``): prints one line per committed transaction (its
  NEWGEN): arrival time (CLOCK_MONOTONIC, the parent's ``time.monotonic()``), the committer's
  PID, its parent's PID (read from /proc at once; -1 if it is gone), the transaction's message
  count and the committer's name.  The parent (:class:`CommitWatch`) matches a tamper's commit
  to the daemon's restore commit: "commit to commit".  The child runs at nice -20: a commit's
  time is when the child reads it, so a child starved of CPU would read late (its lag is
  bounded from below by :func:`watch_lag`, and reported).

The netlink framing is efa-guard's own (``efa_guard.netlink``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from efa_guard import netlink
from tools.harness import REPO, HarnessError, stop_process

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from efa_guard.iptables import Iptables
    from efa_guard.plan import Transaction

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NEWTABLE = NFNL_SUBSYS_NFTABLES << 8 | 0
DELTABLE = NFNL_SUBSYS_NFTABLES << 8 | 2
NEWGEN = NFNL_SUBSYS_NFTABLES << 8 | 15
BATCH_BEGIN, BATCH_END = 0x10, 0x11
NLM_F_ACK, NLM_F_CREATE = 0x4, 0x400
NFPROTO_IPV4 = 2
NFTA_TABLE_NAME = 1
NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME = 2, 3
GENMSG = struct.Struct("=BBH")  # family, version, res_id (network order)
PROBE_TABLE = "efa_bench_probe"
"""The scratch table the delivery probe creates and deletes (in the sandbox namespace only)."""
SENTINEL_CHAIN = "EFA-BENCH-SENTINEL"
"""A scratch chain in mangle whose commits tell that a :class:`CommitWatch` has caught up."""
WAIT = 5.0
"""Seconds to wait for a commit's event, an ack, or a child's ``ready``."""
RESTORE_ATTEMPTS = 10
"""A floor restore that loses a race (a concurrent resync) is tried again this often."""


# -- commits, from datagrams (pure) ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Commit:
    """One committed nf_tables transaction, as its NEWGEN message tells it."""

    at: float  # time.monotonic() of the datagram holding the NEWGEN
    pid: int | None
    comm: str
    messages: int  # messages of the transaction before its NEWGEN
    ppid: int = -1  # the committer's parent, when it could still be read

    def line(self) -> str:
        """The child's output line (see :meth:`parse`)."""
        return f"gen {self.at:.6f} {self.pid or 0} {self.ppid} {self.messages} {self.comm}"

    @classmethod
    def parse(cls, line: str) -> Commit | None:
        """The value of a ``gen`` line; None for any other line."""
        parts = line.rstrip("\n").split(" ", 5)
        if len(parts) < 5 or parts[0] != "gen":
            return None
        try:
            at, pid, ppid, count = float(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            return None
        comm = parts[5] if len(parts) > 5 else ""
        return cls(at, pid or None, comm, count, ppid)


@dataclasses.dataclass
class CommitReader:
    """Datagrams in, the commits they end out; counts each transaction's messages."""

    pending: int = 0

    def feed(self, data: bytes, at: float) -> list[Commit]:
        """The commits whose NEWGEN is in ``data`` (received at ``at``)."""
        out: list[Commit] = []
        for kind, _flags, _seq, _portid, start, end in netlink.messages(data):
            if kind != NEWGEN:
                self.pending += 1
                continue
            found = netlink.find_attrs(
                data, start + GENMSG.size, end, (NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME)
            )
            raw = found.get(NFTA_GEN_PROC_PID)
            pid = struct.unpack(">I", raw)[0] if raw is not None and len(raw) == 4 else None
            comm = netlink.cstring(found.get(NFTA_GEN_PROC_NAME)).replace(" ", "_")
            out.append(Commit(at, pid, comm, self.pending))
            self.pending = 0
        return out


def probe_batch(*, create: bool, seq: int) -> bytes:
    """One nf_tables batch that creates (or deletes) :data:`PROBE_TABLE`; the change acked."""
    subsys = GENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
    name = netlink.pack_attr(NFTA_TABLE_NAME, PROBE_TABLE.encode() + b"\0")
    flags = netlink.NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if create else 0)
    return b"".join(
        (
            netlink.pack(BATCH_BEGIN, subsys, flags=netlink.NLM_F_REQUEST, seq=seq),
            netlink.pack(
                NEWTABLE if create else DELTABLE,
                GENMSG.pack(NFPROTO_IPV4, 0, 0) + name,
                flags=flags,
                seq=seq + 1,
            ),
            netlink.pack(BATCH_END, subsys, flags=netlink.NLM_F_REQUEST, seq=seq + 2),
        )
    )


def commit_to_commit(
    commits: Sequence[Commit],
    *,
    tamper_pid: int,
    window: tuple[float, float],
    daemon_pid: int,
    foreign: frozenset[str] = frozenset(),
) -> float | None:
    """Milliseconds from a tamper's commit to the daemon's next commit (its restore).

    The tamper's commit is the first one of ``tamper_pid`` inside ``window`` (monotonic start
    and end); the restore is the first later commit, inside the window, of another process
    that is a child of ``daemon_pid`` or, when its parent could not be read, whose name is
    not in ``foreign`` (other writers: a resync loop).  None when either is not seen.
    """
    start, end = window
    tamper: Commit | None = None
    for c in commits:
        if c.at < start or c.at > end:
            continue
        if tamper is None:
            if c.pid == tamper_pid:
                tamper = c
            continue
        if c.pid == tamper_pid:
            continue
        if c.ppid == daemon_pid or (c.ppid < 0 and c.comm not in foreign):
            return (c.at - tamper.at) * 1000.0
    return None


def watch_lag(commits: Sequence[Commit], *, pid: int, start: float, exited: float) -> float | None:
    """How late (ms) the watch read the commit of ``pid``, a process that ran start..exited.

    A process commits before it exits: a NEWGEN read after the exit was read late by at least
    that much (0 when it was read in time).  None when the commit was not seen.
    """
    for c in commits:
        if c.pid == pid and c.at >= start:
            return max(0.0, (c.at - exited) * 1000.0)
    return None


# -- child mode: the floor -------------------------------------------------------------------


class Listener:
    """A thread reading a subscribed socket, keeping the commits it sees."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = CommitReader()
        self.commits: list[Commit] = []
        self.overflows = 0
        self.cond = threading.Condition()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nft-listener", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    return
                self.overflows += 1
                self.reader.pending = 0
                continue
            at = time.monotonic()
            found = self.reader.feed(data, at)
            if found:
                with self.cond:
                    self.commits += found
                    self.cond.notify_all()

    def mark(self) -> int:
        """How many commits were seen so far."""
        with self.cond:
            return len(self.commits)

    def wait_pid(self, pid: int, *, after: int, timeout: float) -> Commit:
        """The first commit of ``pid`` from position ``after`` on."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for c in self.commits[after:]:
                    if c.pid == pid:
                        return c
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"no nf_tables event of PID {pid} within {timeout} s"
                    raise HarnessError(msg)
                self.cond.wait(left)

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self.stopped.set()
        self.thread.join(timeout=WAIT)
        self.sock.close()


def delivery(listener: Listener, runs: int) -> list[float]:
    """``runs`` probe commits: ms from before each send to its NEWGEN in the listener."""
    out: list[float] = []
    own = os.getpid()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as tx:
        tx.settimeout(WAIT)
        tx.bind((0, 0))
        for i in range(2 * runs):  # create, delete, ...: the table is gone at the end
            mark = listener.mark()
            start = time.monotonic()
            tx.send(probe_batch(create=i % 2 == 0, seq=3 * i + 1))
            commit = listener.wait_pid(own, after=mark, timeout=WAIT)
            out.append((commit.at - start) * 1000.0)
            _check_ack(tx)
    return out


def _check_ack(tx: socket.socket) -> None:
    """The ack of the batch's table message; an error code raises OSError."""
    data = tx.recv(65536)
    for kind, _flags, _seq, _portid, start, end in netlink.messages(data):
        if kind == netlink.NLMSG_ERROR:
            code = netlink.error_code(data, start, end)
            if code:
                raise OSError(code, f"nf_tables probe batch: {os.strerror(code)}")
            return
    raise OSError(errno.EPROTO, "no ack to the nf_tables probe batch")


def measure_floor(config: Path, runs: int) -> dict[str, object]:
    """The floor's two parts, ``runs`` times each, inside this namespace (a JSON-ready dict)."""
    from efa_guard.config import load  # noqa: PLC0415 - child mode only
    from efa_guard.enforce import inspect  # noqa: PLC0415
    from efa_guard.iptables import Iptables  # noqa: PLC0415
    from efa_guard.sources.nft import subscribe  # noqa: PLC0415

    cfg = load(config)
    if cfg.backend != "nft":
        msg = "--child-floor needs a config with backend nft"
        raise HarnessError(msg)
    ipt = Iptables("nft")
    chain = cfg.policy.chains[0]
    policy = dataclasses.replace(cfg.policy, families=("ipv4",))
    flush = ["iptables-nft", "--wait=5", "-t", chain.table, "-F", chain.name]

    sock = subscribe()
    if not isinstance(sock, socket.socket):  # pragma: no cover - the real one always is
        msg = "efa_guard.sources.nft.subscribe() returned no socket"
        raise HarnessError(msg)
    listener = Listener(sock)
    try:
        delivered = delivery(listener, runs)
        subprocess.run(flush, check=True, capture_output=True)
        txns = inspect(ipt, policy).transactions()
        if not txns:
            msg = f"flushing {chain.table}/{chain.name} left nothing to restore"
            raise HarnessError(msg)
        restored, retries = _restores(ipt, txns, flush, runs, listener=None)
        # The daemon restores the moment the tamper's commit reaches it: the kernel may still
        # be finishing that commit (the tamper's process has not even exited). Measured so.
        after_commit, more = _restores(ipt, txns, flush, runs, listener=listener)
        retries += more
        overflows = listener.overflows
    finally:
        listener.close()
    if not inspect(ipt, cfg.policy).in_sync:
        msg = "the policy is not in place after the floor's restores"
        raise HarnessError(msg)
    return {
        "delivery_ms": delivered,
        "restore_ms": after_commit,
        "restore_quiet_ms": restored,
        "restore_retries": retries,
        "overflows": overflows,
        "transactions": [t.text for t in txns],
    }


def _restores(
    ipt: Iptables,
    txns: Sequence[Transaction],
    flush: list[str],
    runs: int,
    *,
    listener: Listener | None,
) -> tuple[list[float], int]:
    """Each restore's ms after a flush; with `listener`, started at the flush's commit event."""
    from efa_guard.errors import ConcurrentChangeError  # noqa: PLC0415 - child mode only

    out: list[float] = []
    retries = 0
    for _ in range(runs):
        if listener is None:
            subprocess.run(flush, check=True, capture_output=True)
            tamper = None
        else:
            mark = listener.mark()
            tamper = subprocess.Popen(flush, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            listener.wait_pid(tamper.pid, after=mark, timeout=WAIT)
        for attempt in range(1, RESTORE_ATTEMPTS + 1):
            start = time.monotonic()
            try:
                for txn in txns:
                    ipt.restore(txn)
            except ConcurrentChangeError:
                retries += 1
                if attempt == RESTORE_ATTEMPTS:
                    raise
                continue
            out.append((time.monotonic() - start) * 1000.0)
            break
        if tamper is not None and tamper.wait(timeout=WAIT) != 0:
            msg = f"{flush} exited {tamper.returncode}"
            raise HarnessError(msg)
    return out, retries


# -- child mode: every commit ----------------------------------------------------------------


def _ppid(pid: int | None) -> int:
    """The parent of ``pid`` from /proc, or -1 when it is gone."""
    if not pid:
        return -1
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def watch_commits() -> int:
    """Print ``ready``, then one ``gen`` line per commit (``overflow`` on ENOBUFS), forever."""
    from efa_guard.sources.nft import subscribe  # noqa: PLC0415 - child mode only

    sock = subscribe()
    reader = CommitReader()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    while True:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            reader.pending = 0
            out.write(f"overflow {time.monotonic():.6f}\n")
            out.flush()
            continue
        at = time.monotonic()
        for c in reader.feed(data, at):
            out.write(dataclasses.replace(c, ppid=_ppid(c.pid)).line() + "\n")
        out.flush()


class CommitWatch:
    """The ``--child-gens`` child in a namespace: its commits, read by a thread of ours.

    Started with :func:`watching`; stopped by its PID.
    """

    def __init__(self, ns: str) -> None:
        # At the highest priority: a child starved of CPU (a resync loop keeps both CPUs busy)
        # would read commits late, and a commit's time is when it is read.
        argv = ["ip", "netns", "exec", ns, "nice", "-n", "-20", sys.executable, "-m"]
        argv += ["tools.bench_goals"]
        self.proc = subprocess.Popen(
            [*argv, "--child-gens"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.commits: list[Commit] = []
        self.overflows = 0
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name="commit-watch", daemon=True)
        self.thread.start()
        if not self.ready.wait(WAIT) or self.proc.poll() is not None:
            self.stop()
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            msg = f"--child-gens did not start: {err[-1000:]}"
            raise HarnessError(msg)

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            if line.startswith("ready"):
                self.ready.set()
                continue
            commit = Commit.parse(line)
            with self.lock:
                if commit is not None:
                    self.commits.append(commit)
                elif line.startswith("overflow"):
                    self.overflows += 1

    def snapshot(self) -> list[Commit]:
        """The commits seen so far."""
        with self.lock:
            return list(self.commits)

    def caught_up(self, ns: str, timeout: float = 30.0) -> bool:
        """Commit once more in ``ns`` and wait until this watch has read up to that commit.

        The commit creates and deletes a scratch chain in mangle (a table efa-guard does not
        own); True once the deletion's NEWGEN (known by its PID) has arrived.
        """
        pid = 0
        for op in ("-N", "-X"):
            argv = ["ip", "netns", "exec", ns, "iptables-nft", "--wait=5", "-t", "mangle"]
            proc = subprocess.Popen(
                [*argv, op, SENTINEL_CHAIN],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if proc.wait(timeout=WAIT) != 0:
                msg = f"iptables-nft -t mangle {op} {SENTINEL_CHAIN} failed in {ns}"
                raise HarnessError(msg)
            pid = proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(c.pid == pid for c in self.snapshot()):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM by PID, reap, and let the reader thread finish."""
        stop_process(self.proc, grace=WAIT)
        self.thread.join(timeout=WAIT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@contextlib.contextmanager
def watching(ns: str) -> Iterator[CommitWatch]:
    """A :class:`CommitWatch` in ``ns``, always stopped."""
    watch = CommitWatch(ns)
    try:
        yield watch
    finally:
        watch.stop()


def print_floor(config: Path, runs: int) -> int:
    """``--child-floor``: measure, print the JSON, exit 0."""
    print(json.dumps(measure_floor(config, runs)))  # noqa: T201 - the child's report
    return 0
