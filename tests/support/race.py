"""Run actions at the same moment in threads, for tests of concurrent changes.

No sleeps and no timeouts: the threads are lined up by a barrier and released together, then
joined. Whether the actions really overlap is up to the scheduler, so a race test repeats itself;
what it asserts must hold for every interleaving, never depend on one.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from functools import partial
from typing import TypeVar, cast

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

T = TypeVar("T")

_UNSET: object = object()


def race(*actions: Callable[[], T]) -> list[T]:
    """Run each action in its own thread, all started by one barrier at the same moment; return
    their results in the order given.

    An exception in an action is re-raised here after every thread has finished (several as a
    BaseExceptionGroup), so none is lost and no thread outlives the call.
    """
    if len(actions) < 2:
        raise ValueError("a race needs at least two actions")
    start = threading.Barrier(len(actions))
    results: list[object] = [_UNSET] * len(actions)
    errors: list[BaseException | None] = [None] * len(actions)

    def run(i: int, action: Callable[[], T]) -> None:
        try:
            start.wait()
            results[i] = action()
        except BaseException as e:  # handed to the calling thread below
            errors[i] = e
            start.abort()  # a thread still waiting at the barrier is released (BrokenBarrierError)

    threads = [
        threading.Thread(target=run, args=(i, a), name=f"race-{i}", daemon=True)
        for i, a in enumerate(actions)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    raised = [e for e in errors if e is not None]
    real = [e for e in raised if not isinstance(e, threading.BrokenBarrierError)]
    if len(real) == 1:
        raise real[0]
    if real:
        raise BaseExceptionGroup("several racing actions failed", real)
    if raised:
        raise raised[0]
    assert all(r is not _UNSET for r in results)
    return cast("list[T]", results)


# --- what the two people were told ------------------------------------------------------------

#: Tries per race test and database: the interleaving is up to the scheduler, so it runs many times.
TRIES = 20

#: The loser is told the decision was taken: by the compare-and-set ("someone else has already
#: changed …") or, where the database serialised the two requests, by the from-state check.
CONFLICT_WORDS = ("already changed", "not possible while")

_FLASH = re.compile(
    r'<div class="alert alert-(?P<category>[\w-]+)[^"]*"[^>]*>(?P<message>.*?)<button', re.S
)


def post(client: FlaskClient, url: str, **form: str) -> Callable[[], TestResponse]:
    """The POST of ``form`` to ``url`` by ``client``, to be run by ``race``."""
    return partial(client.post, url, data=form)


def told(client: FlaskClient, response: TestResponse) -> list[tuple[str, str]]:
    """Follow the redirect ``response`` like a browser and return the flashed messages shown
    there, as (category, text)."""
    assert response.location, f"not a redirect: {response.status}"
    page = client.get(response.location).get_data(as_text=True)
    return [
        (m["category"], " ".join(html.unescape(m["message"]).split()))
        for m in _FLASH.finditer(page)
    ]


def was_told_conflict(messages: list[tuple[str, str]]) -> bool:
    return any(
        w in text for category, text in messages if category != "success" for w in CONFLICT_WORDS
    )


def was_told_success(messages: list[tuple[str, str]]) -> bool:
    return any(category == "success" for category, _ in messages)


def redirects(**responses: TestResponse) -> list[str]:
    """Complaints about any response that is not a redirect (never a 5xx, never a 409 page)."""
    return [
        f"{who} got {r.status} instead of a redirect"
        for who, r in responses.items()
        if not 300 <= r.status_code < 400
    ]


def who_was_told_what(
    winner: tuple[FlaskClient, TestResponse], loser: tuple[FlaskClient, TestResponse]
) -> list[str]:
    """The one whose decision stands was told it was made; the other, that it was already taken."""
    problems = []
    if not was_told_success(told(*winner)):
        problems.append("the winner was not told the decision was made")
    loser_told = told(*loser)
    if not was_told_conflict(loser_told):
        problems.append(f"the loser was not told of the conflict: {loser_told}")
    return problems


def report(broken: dict[int, list[str]]) -> str:
    """The tries that broke a rule, readably."""
    lines = [f"in {len(broken)} of {TRIES} tries:"]
    lines += [f"  try {i}: " + "; ".join(problems) for i, problems in sorted(broken.items())]
    return "\n".join(lines)
