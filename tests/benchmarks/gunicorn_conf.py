"""gunicorn settings of the benchmark's servers (``-c python:tests.benchmarks.gunicorn_conf``).

Each worker says when it has loaded its app, so that the bench starts measuring only when every
worker can answer (a worker loads the app after the fork: /healthz answering proves only one).

numpy is hidden from the servers: it is installed only for the bench's chart (a dependency of
matplotlib), and fpdf2 imports it whenever it is installed, which would add some 19 MiB to every
worker that a production install (without numpy) does not have.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.modules["numpy"] = None  # type: ignore[assignment]  # "import numpy" now fails: as if absent


def post_worker_init(worker: Any) -> None:
    folder = os.environ.get("BENCH_READY_DIR")
    if folder:
        (Path(folder) / str(os.getpid())).touch()
