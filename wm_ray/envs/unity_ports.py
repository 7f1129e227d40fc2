"""Distinct TCP ports for the Unity envs of one machine: the first free port from a start.

ML-Agents' Python side serves gRPC on ``base_port + worker_id`` and its Unity player connects
to it. Its own check (bind a test socket, close it, then start the server) cannot keep two
processes from choosing the same port at the same moment, and gRPC binds with
``SO_REUSEPORT``, so both servers would start and the players' connections would be spread
over the wrong servers. A :class:`PortLease` rules that out without any coordination between
processes: an exclusive, non-blocking ``flock`` on ``<tempdir>/wm_ray-unity-ports/<port>.lock``
held for the env's life (the kernel drops it when the process dies, so a killed env worker
frees its ports), plus a bind test for ports that other programs use. Envs of one vector env,
of several vector envs in one process, of several env workers (processes) on one node and the
rebuilt env after a crash thus each get their own port, the lowest one free.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path

LOCK_DIR = Path(tempfile.gettempdir()) / "wm_ray-unity-ports"
"""Lock files of the leased ports (shared by every wm_ray process of the machine)."""


class PortLease:
    """An exclusive claim on ``port`` among the wm_ray processes of this machine.

    Args:
        port: The leased port.
        fd: The open, ``flock``-ed lock file; closing it ends the lease.
    """

    def __init__(self, port: int, fd: int) -> None:
        self.port = port
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether the lease is still held."""
        return self._fd is not None

    def release(self) -> None:
        """End the lease (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases its flock
            self._fd = None

    def __repr__(self) -> str:
        return f"PortLease({self.port}, held={self.held})"


def _bindable(port: int) -> bool:
    """Whether a TCP socket can bind ``port`` on every address now (SO_REUSEADDR, as ML-Agents)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def _lock_dir() -> Path:
    if not LOCK_DIR.is_dir():
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # shared by the users of the machine, like /tmp
            LOCK_DIR.chmod(0o1777)
    return LOCK_DIR


def try_lease(port: int) -> PortLease | None:
    """A lease on ``port``, or None when another wm_ray env holds it or a program binds it."""
    import fcntl  # POSIX only, like the rest of the Ray runtime

    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    try:
        fd = os.open(_lock_dir() / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # e.g. another user's lock file
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if not _bindable(port):
        os.close(fd)
        return None
    return PortLease(port, fd)


def lease_free_port(first: int, count: int) -> PortLease:
    """A lease on the lowest free port of ``first .. first + count - 1``.

    Raises:
        RuntimeError: naming the range when every port of it is taken.
    """
    last = min(first + count, 65536) - 1
    for port in range(first, last + 1):
        lease = try_lease(port)
        if lease is not None:
            return lease
    raise RuntimeError(
        f"no free port in {first}..{last} for a Unity env (all leased by other wm_ray envs or "
        "bound by other programs); set another env.base_port or env.worker_id"
    )
