"""Run actions at the same moment in threads, for tests of concurrent changes.

No sleeps and no timeouts: the threads are lined up by a barrier and released together, then
joined. Whether the actions really overlap is up to the scheduler, so a race test repeats itself;
what it asserts must hold for every interleaving, never depend on one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar, cast

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
