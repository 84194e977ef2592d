"""The journal catalog compiles with the real journalctl and explains every event."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from support import need

from efa_guard.catalog import MESSAGE_IDS
from tools.harness import REPO


def test_catalog_compiles_and_lists_every_message_id(tmp_path: Path) -> None:
    """`journalctl --update-catalog` accepts the file; --list-catalog shows all our ids."""
    need(shutil.which("journalctl") is not None, "journalctl is not installed")
    catalogs = tmp_path / "usr/lib/systemd/catalog"
    catalogs.mkdir(parents=True)
    shutil.copy(REPO / "config" / "efa-guard.catalog", catalogs)
    root = f"--root={tmp_path}"
    subprocess.run(["journalctl", root, "--update-catalog"], check=True, capture_output=True)
    listed = subprocess.run(
        ["journalctl", root, "--list-catalog"], check=True, capture_output=True, text=True
    ).stdout
    for name, mid in MESSAGE_IDS.items():
        assert f"{mid} efa-guard: " in listed, name
