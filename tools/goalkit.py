"""Issue 12's goals as rows: a measured figure, its reference from the same run, the ratio, a mark.

Pure values and text, no I/O: ``tools/bench_goals.py`` measures and fills the rows, this module
decides MET/MISSED and prints them.  A target bounds either the ratio measured/reference
(``<= 1.2x``) or the measured figure itself (``<= 1 %``, ``<= 30 ms``, ``<= 0 checks``); a row
with no target is context (``info``).  Verdicts are taken on the exact values; the printed
figures are rounded, but never so far that a miss reads as equal to its limit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from tools.benchkit import Verdict, header

Bound = Literal["ratio", "value", "info"]
Mark = Literal["MET", "MISSED", "N/A", "info"]

MAX_DIGITS = 6
"""Most decimals a figure is printed with (to tell it from its limit)."""


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured quantity: what it is, its value and unit (``ms``, ``%``, ``MB``, ``checks``)."""

    label: str
    value: float
    unit: str
    digits: int | None = None  # fixed decimals (0 for counts); None: see shown()

    def text(self, limit: float | None = None) -> str:
        """``value unit``, rounded by :func:`shown` (against ``limit``, if it is the bound one)."""
        return f"{shown(self.value, limit, digits=self.digits)} {self.unit}".rstrip()

    def as_dict(self) -> dict[str, object]:
        """JSON form (the exact value, rounded to 6 decimals; null for an infinite one)."""
        value = None if math.isinf(self.value) or math.isnan(self.value) else round(self.value, 6)
        return {"label": self.label, "value": value, "unit": self.unit}


@dataclasses.dataclass(frozen=True)
class Target:
    """What a goal asks: ``ratio <= limit``, ``measured <= limit`` (in its unit), or nothing."""

    bound: Bound
    limit: float = math.nan

    def text(self, unit: str) -> str:
        """``<= 1.2x``, ``<= 30 ms``, ``info``."""
        if self.bound == "info":
            return "info"
        suffix = "x" if self.bound == "ratio" else f" {unit}"
        return f"<= {self.limit:g}{suffix}"


@dataclasses.dataclass(frozen=True)
class Goal:
    """One printed row: goal, backend, measured figure, reference figure, target."""

    key: str
    goal: str
    backend: str
    measured: Figure | None
    reference: Figure | None
    target: Target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """The measured figure over the reference, when both exist and the reference is positive."""
        if self.measured is None or self.reference is None or not self.reference.value > 0:
            return None
        return self.measured.value / self.reference.value

    @property
    def met(self) -> bool | None:
        """Whether the target holds; None when it cannot be told (nothing measured, info)."""
        if self.target.bound == "info" or self.measured is None:
            return None
        if self.target.bound == "value":
            return self.measured.value <= self.target.limit
        ratio = self.ratio
        return None if ratio is None else ratio <= self.target.limit

    @property
    def mark(self) -> Mark:
        """``MET``, ``MISSED``, ``N/A`` (not measured) or ``info`` (no target)."""
        if self.target.bound == "info":
            return "info"
        return {True: "MET", False: "MISSED", None: "N/A"}[self.met]  # type: ignore[return-value]

    def cells(self) -> tuple[str, ...]:
        """The row's printed cells: key, goal, backend, measured, reference, ratio, target, mark."""
        limit = self.target.limit if self.target.bound == "value" else None
        measured = self.measured.text(limit) if self.measured else "not measured"
        reference = f"{self.reference.label} {self.reference.text()}" if self.reference else "-"
        ratio_limit = self.target.limit if self.target.bound == "ratio" else None
        ratio = "-" if self.ratio is None else f"{shown(self.ratio, ratio_limit)}x"
        unit = self.measured.unit if self.measured else ""
        return (
            self.key,
            self.goal,
            self.backend,
            measured,
            reference,
            ratio,
            self.target.text(unit),
            self.mark,
        )

    def verdict(self) -> Verdict:
        """The row as a benchkit :class:`Verdict` (the other benchmarks' ``target`` lines)."""
        cells = self.cells()
        what = f"{self.key} {self.goal} ({self.backend}) {cells[6]}"
        ratio = f", ratio {cells[5]}" if self.ratio is not None else ""
        return Verdict(what, f"{cells[3]} vs {cells[4]}{ratio}", self.met)

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        ratio = self.ratio
        return {
            "key": self.key,
            "goal": self.goal,
            "backend": self.backend,
            "measured": self.measured.as_dict() if self.measured else None,
            "reference": self.reference.as_dict() if self.reference else None,
            "ratio": None if ratio is None or math.isinf(ratio) else round(ratio, 6),
            "target": {"bound": self.target.bound, "limit": _limit(self.target)},
            "met": self.met,
            "note": self.note,
        }


def _limit(target: Target) -> float | None:
    return None if target.bound == "info" else target.limit


def shown(value: float, limit: float | None, *, digits: int | None = None) -> str:
    """``value`` rounded for print: ``digits`` decimals, else 2 below 10, 1 below 100, none above.

    Infinite is ``inf`` (a missed correction).  Against ``limit`` it keeps as many more decimals
    (up to :data:`MAX_DIGITS`) as it takes for a value that differs from the limit not to print
    like it: 1.2004 against 1.2 is ``1.2004``, never ``1.20``.
    """
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if digits is None:
        digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    if limit is not None and value != limit:
        while digits < MAX_DIGITS and round(value, digits) == round(limit, digits):
            digits += 1
    return f"{value:.{digits}f}"


def table(goals: list[Goal]) -> list[str]:
    """The goals as an aligned text table (columns sized to their widest cell)."""
    head = ("#", "goal", "backend", "measured", "reference (same run)", "ratio", "target", "")
    rows = [head, *(g.cells() for g in goals)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {3, 5}  # figures and ratios line up on the right

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    top = header(line(head))
    return [*top, *(line(r) for r in rows[1:])]


def tally(goals: list[Goal]) -> str:
    """``goals: 5 MET, 3 MISSED, 1 N/A, 2 info``."""
    counts: dict[str, int] = {}
    for g in goals:
        counts[g.mark] = counts.get(g.mark, 0) + 1
    order = ("MET", "MISSED", "N/A", "info")
    return "goals: " + ", ".join(f"{counts[m]} {m}" for m in order if m in counts)
