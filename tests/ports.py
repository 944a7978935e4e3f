"""Free loopback ports for servers a test starts.

A port the kernel hands out for ``bind(0)`` lies in its ephemeral range, which is also where every outgoing
connection on this machine takes its local port. A server that starts a moment later (a subprocess takes a
second or two to import) can then lose the port to someone's connection, and fail to bind. So ports are drawn
below the ephemeral range, where only another listener can take them.
"""

import random
import socket
from pathlib import Path

_LOW = 20000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive free ports below the ephemeral range."""
    high = _ephemeral_start() - count
    for _ in range(200):
        base = random.randint(_LOW, max(high, _LOW))
        if all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {_LOW} and {high + count}")


def free_port() -> int:
    return free_ports(1)
