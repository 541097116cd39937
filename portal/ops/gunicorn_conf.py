"""gunicorn hooks for the portal's Prometheus metrics with several workers:

    PROMETHEUS_MULTIPROC_DIR=/run/portal-metrics \\
        gunicorn -c python:portal.ops.gunicorn_conf -w 4 -b 127.0.0.1:8000 'portal:create_app()'

Only hooks live here; every setting (workers, bind, timeouts) stays with the command line and
``GUNICORN_CMD_ARGS``. Without ``PROMETHEUS_MULTIPROC_DIR`` the hooks do nothing, and each worker
would report only its own share of the traffic.

- ``on_starting`` (the master, before any worker starts): creates the directory, or empties it of
  the metric files (``*.db``) a previous run left; old files would add a dead server's counts to
  the new one's. Only those files are removed, so a directory named by mistake loses nothing else.
- ``child_exit`` (the master, when a worker ends or is replaced): tells the client that this
  worker's live gauges are gone (``mark_process_dead``); its counters and histograms stay, summed.

The variable must be in the environment gunicorn starts with (set by the shell, the service
manager or the container), not set from Python later: the workers inherit it, and the client
chooses between memory and files when it is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

#: The environment variable the Prometheus client reads (its name is the client's).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _shared_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def on_starting(server: Any) -> None:
    folder = _shared_dir()
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        if stale.is_file():
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    folder = _shared_dir()
    if folder is not None:
        multiprocess.mark_process_dead(worker.pid, str(folder))  # type: ignore[no-untyped-call]
