"""Reading the man pages' roff source in tests: escapes made plain, sections by heading."""

from __future__ import annotations

import re
from pathlib import Path

from tools.harness import REPO

DEBIAN = REPO / "packaging" / "debian"
MAN8 = DEBIAN / "efa-guard.8"
MAN5 = DEBIAN / "efa-guard.toml.5"


def roff(path: Path) -> str:
    """A page's source with roff's escaped minus, quotes and font changes made plain."""
    text = re.sub(r"\\f[BIRP]", "", path.read_text())
    return text.replace("\\-", "-").replace("\\(dq", '"').replace("\\&", "")


def sections(text: str, macro: str) -> dict[str, str]:
    """Text under each `.SH`/`.SS` heading, keyed by the heading's first word."""
    out: dict[str, str] = {}
    parts = re.split(rf"^\.{macro} (.*)$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        out[heading.strip('"').split()[0]] = body.split("\n.SH ")[0]
    return out


def mentions(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` as a whole option or identifier."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None
