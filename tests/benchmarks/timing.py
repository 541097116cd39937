"""Requests over HTTP, timed: one page's latency over sequential requests, and a server's
requests per second under concurrent client processes.

Each request opens a new connection (gunicorn's sync workers close it after every answer), so a
time includes connecting, as a browser's first request to a server would. This module imports
nothing heavy: the client processes of a throughput run import it on their own.
"""

from __future__ import annotations

import http.client
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from queue import Empty

#: Requests sent before timing a page: they fill the worker's caches (templates, metadata).
WARM_UP = 2
#: Seconds of load before a throughput run is timed (each worker's first requests are slow).
WARM_UP_SECONDS = 2.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    #: The X-SQL-Statements header: the statements the request ran (None if not sent).
    statements: int | None
    location: str | None
    ms: float


def fetch(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    body: bytes | None = None,
) -> Answer:
    """One request to 127.0.0.1:``port`` on a new connection, timed from connecting to the
    answer's last byte."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body, headers={**(headers or {})})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    ms = (time.perf_counter() - started) * 1000
    statements = response.getheader("X-SQL-Statements")
    return Answer(
        response.status,
        data,
        int(statements) if statements is not None else None,
        response.getheader("Location"),
        ms,
    )


@dataclass(frozen=True)
class Latency:
    """A page's answer and times over sequential requests."""

    status: int
    bytes: int
    #: Statements most requests ran, and the most any ran (the login session is marked seen
    #: at most once a minute, which adds a write to that one request).
    statements: int | None
    statements_max: int | None
    median_ms: float
    p95_ms: float


def latency(port: int, path: str, headers: Mapping[str, str], rounds: int) -> Latency:
    """Time ``rounds`` requests for ``path`` after the warm-up. The status is the timed
    requests' (the first one other than 200, if any was)."""
    for _ in range(WARM_UP):
        fetch(port, path, headers)
    answers = [fetch(port, path, headers) for _ in range(rounds)]
    times = [a.ms for a in answers]
    counted = [a.statements for a in answers if a.statements is not None]
    return Latency(
        status=next((a.status for a in answers if a.status != 200), 200),
        bytes=len(answers[-1].body),
        statements=Counter(counted).most_common(1)[0][0] if counted else None,
        statements_max=max(counted) if counted else None,
        median_ms=statistics.median(times),
        p95_ms=percentile(times, 95),
    )


def percentile(values: list[float], p: int) -> float:
    """The ``p``-th percentile, interpolated between the values measured (never beyond them)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


@dataclass(frozen=True)
class Throughput:
    """Requests per second one server answered (status 200) under ``clients`` client processes."""

    clients: int
    seconds: float
    requests: int
    errors: int
    rps: float


def _requests(
    port: int, path: str, headers: Mapping[str, str], seconds: float
) -> tuple[int, int, float]:
    """Requests, one after the other, until ``seconds`` have passed: (answered 200, other
    answers or failures, seconds taken)."""
    began = time.monotonic()
    done = errors = 0
    while time.monotonic() - began < seconds:
        try:
            ok = fetch(port, path, headers).status == 200
        except OSError:
            ok = False
        done += ok
        errors += not ok
    return done, errors, time.monotonic() - began


def _client(
    port: int,
    path: str,
    headers: Mapping[str, str],
    seconds: float,
    start: Barrier,
    out: Queue[tuple[int, int, float]],
) -> None:
    """One client process: the warm-up, then (all clients together) the timed run."""
    start.wait()
    _requests(port, path, headers, WARM_UP_SECONDS)
    start.wait()
    out.put(_requests(port, path, headers, seconds))


def throughput(
    port: int, path: str, headers: Mapping[str, str], *, seconds: float, clients: int
) -> Throughput:
    """Run ``clients`` processes sending requests for ``path`` for ``seconds`` (all starting
    together, after WARM_UP_SECONDS of the same load that are not counted: every worker has then
    compiled its templates and filled its caches); each one's requests are divided by its own
    elapsed time and the rates added."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding DB engines
    start = context.Barrier(clients)
    out: Queue[tuple[int, int, float]] = context.Queue()
    processes = [
        context.Process(target=_client, args=(port, path, dict(headers), seconds, start, out))
        for _ in range(clients)
    ]
    for p in processes:
        p.start()
    reports: list[tuple[int, int, float]] = []
    deadline = time.monotonic() + WARM_UP_SECONDS + seconds + 120
    try:
        while len(reports) < clients:
            try:
                reports.append(out.get(timeout=1))
            except Empty:
                failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"client processes failed (exit codes {failed}) or did not report"
                    ) from None
    finally:
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()  # a client this function started, stuck
                p.join()
    return Throughput(
        clients=clients,
        seconds=seconds,
        requests=sum(done for done, _, _ in reports),
        errors=sum(errors for _, errors, _ in reports),
        rps=sum(done / elapsed for done, _, elapsed in reports),
    )
