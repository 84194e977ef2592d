"""`check` as monitoring systems read it: perfdata through a real parser, usage errors, timeouts."""

from __future__ import annotations

import shutil
import subprocess
import sys

from support import Guard, need

PERL = """
use Monitoring::Plugin::Performance;
my ($perf) = @ARGV;
for my $p (Monitoring::Plugin::Performance->parse_perfstring($perf)) {
    print $p->label, "=", $p->threshold->get_status($p->value), "\\n";
}
"""


def perf_status(status_line: str) -> dict[str, int]:
    """Each perfdata label's state under the Monitoring Plugins threshold rules (Perl's parser)."""
    need(shutil.which("perl") is not None, "perl is not installed")
    probe = subprocess.run(["perl", "-MMonitoring::Plugin", "-e", "1"], check=False)
    need(probe.returncode == 0, "libmonitoring-plugin-perl is not installed")
    perf = status_line.split(" | ", 1)[1]
    out = subprocess.run(["perl", "-e", PERL, perf], capture_output=True, text=True, check=True)
    return {k: int(v) for k, v in (line.split("=") for line in out.stdout.splitlines())}


def test_perfdata_thresholds_agree_with_the_exit_code(guard: Guard) -> None:
    """Drift parses as CRITICAL exactly when check exits 2; in place, everything parses OK."""
    drifted = guard.efa("check", "--no-exposure")
    assert drifted.returncode == 2
    assert perf_status(drifted.stdout.splitlines()[0])["drift"] == 2
    assert guard.efa("apply").returncode == 0
    fine = guard.efa("check", "--no-exposure")
    assert fine.returncode == 0, fine.stdout
    assert set(perf_status(fine.stdout.splitlines()[0]).values()) == {0}


def test_exposed_services_parse_as_warning(guard: Guard) -> None:
    """A listener outside the allowlist: check WARNING, and `exposed` parses as WARNING."""
    assert guard.efa("apply").returncode == 0
    guard.box.start_listeners(tcp=(80,), udp=())
    out = guard.efa("check")
    assert out.returncode == 1, out.stdout
    assert perf_status(out.stdout.splitlines()[0])["exposed"] == 1


def test_usage_errors_are_unknown_with_a_status_line() -> None:
    """`check -w 1` and `check --bogus` exit 3 with an EFA-GUARD UNKNOWN first line."""
    for args in (["-w", "1"], ["--bogus"], ["--timeout", "-5"]):
        done = subprocess.run(
            [sys.executable, "-m", "efa_guard", "check", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 3, args
        assert done.stdout.startswith("EFA-GUARD UNKNOWN - usage error"), done.stdout


def test_check_version_and_timeout(guard: Guard) -> None:
    """`check --version` answers; a timeout too short to finish ends UNKNOWN, not hanging."""
    version = guard.efa("check", "--version")
    assert version.returncode == 0
    assert version.stdout.startswith("efa-guard ")
    late = guard.efa("check", "--timeout", "0.001")
    assert late.returncode == 3
    assert late.stdout.startswith("EFA-GUARD UNKNOWN - timed out after 0.001 s")
