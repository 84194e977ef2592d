"""The daemon's exposure survey runs in the background, one at a time, the newest request last."""

from __future__ import annotations

import threading
import time

import structlog
from fakes import CFG

from efa_guard.config import Config
from efa_guard.daemon.survey import DAEMON_BUDGET, ExposureWatch
from efa_guard.iptables import Iptables


class Recording(ExposureWatch):
    """Records each survey's config and budget; the first one waits until released."""

    def __init__(self) -> None:
        super().__init__(ipt=Iptables("nft"), log=structlog.get_logger(), clock=time.monotonic)
        self.background = True
        self.calls: list[tuple[Config, float | None, int]] = []
        self.release = threading.Event()
        self.done = threading.Event()

    def survey(
        self, config: Config, *, ipt: Iptables | None = None, budget: float | None = None
    ) -> None:
        """Record; block the first call until released."""
        assert ipt is not None
        self.calls.append((config, budget, ipt.slot_base))
        if len(self.calls) == 1:
            self.release.wait(5)
        else:
            self.done.set()


def test_a_survey_runs_off_the_loop_and_requests_meanwhile_collapse() -> None:
    """The loop never waits for a survey; three requests during one run become one more run."""
    watch = Recording()
    start = time.monotonic()
    watch.maybe_survey(CFG, force=True)
    for _ in range(3):
        watch.maybe_survey(CFG, force=True)
    assert time.monotonic() - start < 1.0  # the first survey still blocks in its thread
    watch.release.set()
    assert watch.done.wait(5)
    time.sleep(0.1)
    assert len(watch.calls) == 2
    assert all(budget == DAEMON_BUDGET for _, budget, _ in watch.calls)
    assert all(base > 0 for _, _, base in watch.calls)  # its own read locks, never the loop's
