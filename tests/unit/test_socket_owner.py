"""A socket whose process cannot be read is still named by its owning user, from the kernel."""

from __future__ import annotations

import socket
import struct

from efa_guard import netlink
from efa_guard.exposure import Finding
from efa_guard.findings import Owner, Visibility
from efa_guard.sockets import SOCK_DIAG_BY_FAMILY, _listener, user_name

_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")


def test_the_kernel_owner_is_decoded() -> None:
    """inet_diag_msg's idiag_uid becomes Listener.uid."""
    body = _MSG.pack(
        socket.AF_INET, 10, 0, 0, struct.pack(">H", 3306), b"\0\0", bytes(16), bytes(16),
        0, bytes(8), 0, 0, 0, 110, 4242,
    )  # fmt: skip
    data = netlink.pack(SOCK_DIAG_BY_FAMILY, body)
    found = _listener(data, 16, len(data), socket.IPPROTO_TCP)
    assert found is not None
    assert (found.port, found.uid, found.inode) == (3306, 110, 4242)


def test_a_user_names_the_finding_when_no_process_does() -> None:
    """Under the hardened unit a finding reads `user root (uid 0); process not visible here`."""
    assert user_name(0) == "root (uid 0)"
    assert user_name(None) is None
    assert user_name(2**31 - 7) == f"uid {2**31 - 7}"
    seen = Visibility(True, "no rule drops it", False)  # noqa: FBT003
    named = Finding("socket", "tcp", 3306, "ipv4", "0.0.0.0", seen, Owner(user=user_name(0)))  # noqa: S104
    assert named.name == "tcp/3306 ipv4 (user root (uid 0); process not visible here)"
    assert named.as_dict()["user"] == "root (uid 0)"
