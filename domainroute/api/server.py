"""Run the API on uvicorn: in the foreground (``domainroute serve``) or on a thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until Ctrl-C / SIGTERM."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws="none", timeout_graceful_shutdown=10)


@contextmanager
def background_server(app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, lifetime_s: float = 600,
                      startup_timeout_s: float = 30, log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` on a thread; yield its base URL (``port=0`` picks a free port).

    The server stops when the block exits, and in any case after ``lifetime_s`` seconds.
    """
    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, ws="none", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="domainroute-api", daemon=True)
    stopper = threading.Timer(lifetime_s, lambda: setattr(server, "should_exit", True))
    stopper.daemon = True
    thread.start()
    stopper.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start on {host}:{sock.getsockname()[1]} "
                                   f"within {startup_timeout_s:g} s")
            time.sleep(0.01)
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
    finally:
        stopper.cancel()
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
