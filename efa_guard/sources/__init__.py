"""Event sources: each turns one kind of change in the world into Event values."""

from __future__ import annotations

from collections.abc import Callable

from efa_guard.events import Event

Emit = Callable[[Event], None]

__all__ = ["Emit"]
