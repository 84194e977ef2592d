"""sd_notify(3) without libsystemd: READY, STATUS and WATCHDOG datagrams."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Talks to systemd through $NOTIFY_SOCKET; silent when not run by systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval = int(usec) / 2e6 if wanted else None

    @property
    def enabled(self) -> bool:
        """Whether a notification socket was given."""
        return bool(self.address)

    def send(self, **fields: str) -> bool:
        """Send KEY=value lines; True if delivered."""
        if not self.address:
            return False
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)  # noqa: FBT003 - never wait for a stuck manager
            try:
                s.sendto(payload, self.address)
            except OSError:
                return False
        return True

    def ready(self, status: str) -> bool:
        """READY=1 with a status line."""
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        """Update the status line shown by systemctl status."""
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        """Keep-alive ping."""
        return self.send(WATCHDOG="1")

    def stopping(self) -> bool:
        """Tell systemd we are shutting down."""
        return self.send(STOPPING="1", STATUS="stopping; the policy stays in place")
