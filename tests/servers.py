"""Helpers for tests that run a real server on 127.0.0.1: a free port, and a context manager that
starts a server process and waits until it answers."""

from __future__ import annotations

import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(argv: list[str], ready_url: str, log: Path, timeout_s: float = 120, **popen) -> Iterator[None]:
    """Run `argv` (output to `log`) until the block ends; it is up once `ready_url` answers 200."""
    with log.open("w") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **popen)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if httpx.get(ready_url).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{Path(argv[0]).name} did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield
        finally:
            server.kill()
            server.wait()
