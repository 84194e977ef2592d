"""pyroute2's IPRoute without the package's aggregate __init__, in a fresh interpreter each."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from efa_guard.sources import pyroute
{setup}
cls = pyroute.iproute_class()
bare = "pyroute2.ndb" not in sys.modules and "sqlite3" not in sys.modules
from pyroute2 import NetlinkError, IPRoute
print(json.dumps({{
    "cls": f"{{cls.__module__}}.{{cls.__qualname__}}",
    "bare": bare,
    "same": IPRoute is cls,
    "error": NetlinkError.__name__,
}}))
"""


def probe(setup: str = "") -> dict[str, object]:
    """Run PROBE in a fresh Python; what it found."""
    code = PROBE.format(setup=setup)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found: dict[str, object] = json.loads(done.stdout)
    return found


def test_iproute_comes_without_ndb_and_the_package_still_answers() -> None:
    """No NDB/sqlite3 is imported for IPRoute; a later `from pyroute2 import ...` works as ever."""
    found = probe()
    assert found["bare"] is True
    assert str(found["cls"]).endswith(".IPRoute")
    assert found["same"] is True
    assert found["error"] == "NetlinkError"


def test_an_already_imported_pyroute2_is_used_as_it_is() -> None:
    """A process that imported pyroute2 first gets its IPRoute, nothing registered again."""
    found = probe("import pyroute2")
    assert found["bare"] is False
    assert found["same"] is True


def test_a_failing_bare_import_falls_back_to_the_ordinary_one() -> None:
    """A module that cannot be imported bare: all of pyroute2 is dropped and imported as usual."""
    found = probe('pyroute._MODULE = "pyroute2.no_such_module"')
    assert found["bare"] is False
    assert found["same"] is True
    assert found["error"] == "NetlinkError"
