"""`efa-guard run`, one concern per module.

main      wires the backend, the sources, the reconcile step and the loop
loop      signals, the event queue, settling bursts, timer, watchdog, READY
step      the reconcile step: handle → scope → check → correct → log
schedule  holds, held events, follow-ups and deadlines
fights    corrections in the contest window, back-off, contested
reload    re-reading the config file; a broken edit never replaces the running policy
survey    exposure watching
report    the journal events, worded for an operator
publish   state.json in the run directory, for `check` and `reload`
"""

from efa_guard.daemon.main import run

__all__ = ["run"]
