"""The benchmark's knobs, read from the environment once (``make bench``; see the Makefile).

======================  ======================================================================
``BENCH_SCALE``         size of the generated data; 1 (default) is DESIGN.md's reference scale
``BENCH_SEED``          the generator's seed (default 1): the same seed gives the same data
``BENCH_DATABASE_URL``  a PostgreSQL URL to bench on instead of SQLite (the database is made,
                        filled and kept as the cache; each run works on a copy of it)
``BENCH_ROUNDS``        timed requests per page, after two warm-up requests (default 30)
``BENCH_SECONDS``       length of each requests-per-second run (default 10)
``BENCH_WORKERS``       gunicorn workers for the throughput run (default ``WEB_CONCURRENCY``,
                        else twice the cores plus one); page latencies use one worker
``BENCH_CLIENTS``       client processes of a throughput run (default: workers + 1)
``BENCH_IMPORT_LINES``  lines of the generated ``sacct`` file (default 200,000 at scale 1, in
                        proportion below it, at least 20,000)
``BENCH_OUTPUT``        where results.md, results.json and latency.png go (default docs/benchmarks)
======================  ======================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The repository's root: gunicorn and the flask command run here.
ROOT = Path(__file__).resolve().parents[2]
#: Lines of the usage import's file at scale 1.
IMPORT_LINES = 200_000


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _count(name: str, default: int) -> int:
    value = int(_number(name, default))
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def default_workers() -> int:
    """gunicorn's own advice (twice the cores plus one), unless ``WEB_CONCURRENCY`` says otherwise."""
    configured = os.environ.get("WEB_CONCURRENCY", "").strip()
    return int(configured) if configured else 2 * (os.cpu_count() or 1) + 1


@dataclass(frozen=True)
class Settings:
    scale: float
    seed: int
    database_url: str | None
    rounds: int
    seconds: float
    workers: int
    clients: int | None
    import_lines: int
    output: Path

    @classmethod
    def from_environment(cls) -> Settings:
        scale = _number("BENCH_SCALE", 1.0)
        if scale <= 0:
            raise ValueError(f"BENCH_SCALE must be positive, not {scale}")
        clients = os.environ.get("BENCH_CLIENTS", "").strip()
        return cls(
            scale=scale,
            seed=int(os.environ.get("BENCH_SEED", "").strip() or 1),
            database_url=os.environ.get("BENCH_DATABASE_URL", "").strip() or None,
            rounds=_count("BENCH_ROUNDS", 30),
            seconds=_number("BENCH_SECONDS", 10.0),
            workers=_count("BENCH_WORKERS", default_workers()),
            clients=_count("BENCH_CLIENTS", 1) if clients else None,
            import_lines=_count(
                "BENCH_IMPORT_LINES", round(IMPORT_LINES * min(max(scale, 0.1), 1))
            ),
            output=ROOT / os.environ.get("BENCH_OUTPUT", "docs/benchmarks"),
        )

    def clients_for(self, workers: int) -> int:
        """Client processes for a throughput run against ``workers`` workers: enough to keep
        each one busy while the others' answers travel."""
        return self.clients or workers + 1
