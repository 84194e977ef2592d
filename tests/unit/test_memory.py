"""The daemon's heap: free pages given back after work, at most every few seconds."""

from __future__ import annotations

import subprocess
import sys

from efa_guard.daemon.memory import Trimmer

# What a read in a worker thread leaves: its arena full of freed chunks between a few survivors.
FRAGMENTED = """
import threading
from efa_guard.daemon.memory import Trimmer, return_big_buffers
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
return_big_buffers()
kept = []
def work():
    chunks = [bytes(10_000) + bytes([i % 256]) for i in range(3000)]
    kept.extend(chunks[::100])
t = threading.Thread(target=work)
t.start()
t.join()
before = rss()
Trimmer().after_work(0.0)
print(before, rss())
"""


def test_a_trim_gives_a_worker_arenas_free_pages_back() -> None:
    """~30 MB freed in a thread's arena stays resident until the trim, then most of it is gone."""
    done = subprocess.run(
        [sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, check=True
    )
    before, after = map(float, done.stdout.split())
    assert before - after > 15, (before, after)


def test_trims_are_rate_limited() -> None:
    """One trim per `every` seconds however much work comes; the clock is the caller's."""
    calls: list[int] = []
    trimmer = Trimmer(every=5.0, trim=lambda: calls.append(1))
    for now in (100.0, 101.0, 104.9, 105.0, 105.1, 111.0):
        trimmer.after_work(now)
    assert trimmer.trims == len(calls) == 3


def test_without_malloc_trim_nothing_is_called() -> None:
    """A libc without malloc_trim (musl): the trimmer does nothing and never fails."""
    trimmer = Trimmer(trim=None)
    trimmer.after_work(0.0)
    assert trimmer.trims == 0
