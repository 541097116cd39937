"""A gunicorn server on 127.0.0.1 for the benchmark: started, waited for, measured and stopped.

The portal and the bare-Flask floor are served by the same command (``gunicorn APP -b
127.0.0.1:PORT -w N``, sync workers) so that their difference is the portal's own work.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from flask import Flask

from portal import create_app
from tests.benchmarks.settings import ROOT
from tests.benchmarks.timing import fetch

#: The longest a server may take to have every worker ready, and to stop.
START_SECONDS = 120
STOP_SECONDS = 30
MIB = 1024 * 1024


@dataclass(frozen=True)
class Memory:
    """Resident memory of a server's workers (not the master), in MiB."""

    workers: int
    max_mib: float
    mean_mib: float


@dataclass(frozen=True)
class Server:
    port: int
    workers: int
    process: subprocess.Popen[bytes]

    def memory(self) -> Memory:
        """The workers' resident set sizes now."""
        sizes = [
            child.memory_info().rss / MIB for child in psutil.Process(self.process.pid).children()
        ]
        return Memory(len(sizes), max(sizes), statistics.fmean(sizes))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _log_tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-3000:]


@contextmanager
def gunicorn(app: str, workers: int, env: Mapping[str, str], folder: Path) -> Iterator[Server]:
    """Serve ``app`` (gunicorn's ``module:callable()``) with ``workers`` sync workers and the
    environment ``env`` added; yields once every worker has loaded the app and /healthz answers;
    stops the server (gracefully, SIGTERM) when the block ends."""
    port = free_port()
    ready = folder / f"ready-{port}"
    ready.mkdir()
    log = folder / f"gunicorn-{port}.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--config",
        "python:tests.benchmarks.gunicorn_conf",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env, "BENCH_READY_DIR": str(ready)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so that it can be ended as a whole
        )
    try:
        _wait_until_ready(process, port, workers, ready, log)
        yield Server(port, workers, process)
    finally:
        _stop(process)


def _wait_until_ready(
    process: subprocess.Popen[bytes], port: int, workers: int, ready: Path, log: Path
) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{_log_tail(log)}")
        if len(list(ready.iterdir())) >= workers:
            try:
                if fetch(port, "/healthz").status == 200:
                    return
            except OSError:
                pass  # not listening yet
        time.sleep(0.05)
    raise TimeoutError(f"gunicorn was not ready in {START_SECONDS} s:\n{_log_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group this bench started, and only it
        process.wait()


#: gunicorn's application specs of the two servers.
PORTAL_APP = "portal:create_app()"
FLOOR_APP = "tests.benchmarks.floor:create_app()"


def portal_config(url: str, secret: str) -> dict[str, str]:
    """The served portal's settings, as environment variables: production (a random secret key
    per run), the bench's database, and three settings for measuring. The statement count
    header is on; the public page cache is off (each public page is rendered, not served from
    memory); the API's per-token rate limit is lifted (the bench sends more than 120 requests a
    minute with one token)."""
    return {
        "PORTAL_ENV": "production",
        "SECRET_KEY": secret,
        "DATABASE_URL": url,
        "PORTAL_SQL_COUNT_HEADER": "true",
        "PORTAL_PUBLIC_CACHE_SECONDS": "0",
        "PORTAL_API_RATE_LIMIT": "1000000 per minute",
    }


def portal_app(url: str, secret: str) -> Flask:
    """The portal in the bench's own process, configured as the served one (the same database,
    and the same secret key, so that the session cookies it signs are the server's)."""
    return create_app({"ENV": "production", "SECRET_KEY": secret, "DATABASE_URL": url})
