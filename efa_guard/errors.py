"""The exception hierarchy: every error efa-guard raises is an EfaGuardError."""

from __future__ import annotations

from collections.abc import Sequence


class EfaGuardError(Exception):
    """Root of efa-guard's own errors."""


class ConfigError(EfaGuardError):
    """The configuration cannot be used; names the file, the key and the reason."""

    def __init__(self, path: str, key: str, reason: str, *, sha256: str = "") -> None:
        self.path = path
        self.key = key
        self.reason = reason
        self.sha256 = sha256  # of the rejected file, when known
        super().__init__(f"{path}: {key}: {reason}")


class IptablesMissingError(EfaGuardError):
    """An iptables binary the backend needs is not installed."""


class PrivilegeError(EfaGuardError):
    """The kernel refused us: not root, or no CAP_NET_ADMIN."""


class CommandError(EfaGuardError):
    """An iptables command failed; carries all the evidence."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stdout: str,
        stderr: str,
        stdin: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        detail = stderr.strip() or stdout.strip() or "(no output)"
        super().__init__(f"{' '.join(self.argv)} exited {returncode}: {detail}")


class ConcurrentChangeError(CommandError):
    """A transaction lost a race (lock held, or a rule it deletes moved): worth retrying."""


class VerifyError(EfaGuardError):
    """A transaction was accepted but reading back shows the policy still differs."""


class ReadError(EfaGuardError):
    """The kernel's rules could not be read, or the read cannot be trusted: never an answer."""


class ReadCommandError(CommandError, ReadError):
    """A command that reads the rules failed or printed something we cannot trust."""


class UnstableReadError(ReadError):
    """The ruleset kept changing while we read it: no consistent snapshot within the retries."""


class ForeignRuleError(CommandError):
    """iptables cannot change a chain because another tool put rules it cannot handle there.

    The message names the chain, the foreign rules (position, nft's own text) and carries
    iptables' own stderr.
    """


# A one-shot command cannot run at all (exit UNKNOWN): no config, no iptables, no privilege.
CANNOT_RUN = (ConfigError, IptablesMissingError, PrivilegeError)
# A write that failed, with its evidence (or that did not stick).
WRITE_FAILED = (CommandError, VerifyError)
