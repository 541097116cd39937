"""The portal served by gunicorn in a subprocess, as a deployment runs it: started on a free port
of 127.0.0.1 with the environment a host would have, waited for until ``/readyz`` answers 200,
and stopped (SIGTERM, then its whole process group is killed).

Each server is started in its own session (process group), so stopping it ends its workers too
and nothing else. Its standard output and error go to a log file in the test's folder; every
failure to start quotes its end.

Several servers start in parallel with ``started`` (returns as soon as the process runs) followed
by ``wait_until_ready`` on each; ``gunicorn`` does both for one server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.oidc import free_port

#: The repository: gunicorn runs there, as ``make run`` and a checkout deployment would.
ROOT = Path(__file__).resolve().parents[2]
#: The longest a server may take to answer ``/readyz`` with 200, and to stop after SIGTERM.
START_SECONDS = 60
STOP_SECONDS = 20
#: The portal as gunicorn loads it (``module:callable()``), as README's deployment section runs it.
PORTAL_APP = "portal:create_app()"


#: Settings a host gets only from ``env``, never from the environment the tests run in.
PORTAL_SETTINGS = ("SECRET_KEY", "DATABASE_URL", "FLASK_APP", "FLASK_DEBUG")


def host_environ(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a host's process: this process's without any portal setting
    (``PORTAL_*``, ``SECRET_KEY``, ``DATABASE_URL``), so a developer's shell cannot change what
    the test deploys, plus ``env``."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PORTAL_") and k not in PORTAL_SETTINGS
    }
    return {**inherited, **env}


@dataclass(frozen=True)
class Server:
    """One running gunicorn: its address, process (the master) and log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def wait_until_ready(self, seconds: float = START_SECONDS) -> None:
        """Poll ``/readyz`` until it answers 200 (database reachable and at the migrations' head,
        templates loading); fail with the log if the server exits or the deadline passes."""
        deadline = time.monotonic() + seconds
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn {self.name} exited with {self.process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            try:
                resp = requests.get(f"{self.url}/readyz", timeout=10)
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or its worker is still loading the app
            else:
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text[:300]}"
            time.sleep(0.1)  # polling a starting process, not synchronising a test
        raise TimeoutError(
            f"gunicorn {self.name} was not ready in {seconds:g} s (last /readyz: {last}):\n"
            f"{self.log_tail()}"
        )


def command(
    port: int, *, app: str = PORTAL_APP, workers: int = 2, options: Sequence[str] = ()
) -> list[str]:
    """The command line: the project's own interpreter runs gunicorn (sync workers, no
    ``--preload``: each worker builds the app after the fork, as in production, so no database
    connection is shared across a fork), with ``options`` added (e.g. ``-c python:…``). No
    control socket: its default path is in the home folder, shared by every server a machine
    runs."""
    return [
        *(sys.executable, "-m", "gunicorn", app),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
        *("--graceful-timeout", "10", "--access-logfile", "-", "--error-logfile", "-"),
        "--no-control-socket",
        *options,
    ]


@contextmanager
def started(
    env: Mapping[str, str],
    folder: Path,
    *,
    name: str = "portal",
    workers: int = 2,
    app: str = PORTAL_APP,
    port: int | None = None,
    options: Sequence[str] = (),
) -> Iterator[Server]:
    """Start gunicorn with the environment ``host_environ(env)``; yields at once (call
    ``wait_until_ready``); stops the server when the block ends."""
    port = port or free_port()
    log = folder / f"gunicorn-{name}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command(port, app=app, workers=workers, options=options),
            cwd=ROOT,
            env=host_environ(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended as a whole by ``stop``
        )
    server = Server(name, port, process, log)
    try:
        yield server
    finally:
        stop(process)


@contextmanager
def gunicorn(
    env: Mapping[str, str],
    folder: Path,
    *,
    name: str = "portal",
    workers: int = 2,
    app: str = PORTAL_APP,
    port: int | None = None,
    options: Sequence[str] = (),
) -> Iterator[Server]:
    """One gunicorn, ready (``/readyz`` answered 200) when the block starts."""
    with started(
        env, folder, name=name, workers=workers, app=app, port=port, options=options
    ) as server:
        server.wait_until_ready()
        yield server


def stop(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM to each master (gunicorn's graceful shutdown: workers finish their requests; all
    are told first, so several servers stop in parallel), then SIGKILL to each process group a
    server was started in, for any worker left behind."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        with suppress(ProcessLookupError):  # the whole group has exited
            os.killpg(process.pid, signal.SIGKILL)  # a group this runner started, and only it
        process.wait()
