"""``@per_request`` answers once per read-only request, and never across requests or writes."""

from __future__ import annotations

import pytest
from flask import Flask

from portal.core.database import set_read_only
from portal.core.memo import per_request

pytestmark = pytest.mark.once


def test_a_read_only_request_asks_once_and_the_next_request_asks_again(app: Flask) -> None:
    calls: list[int] = []

    @per_request
    def ask(n: int) -> int:
        calls.append(n)
        return n * 2

    for _ in range(2):
        with app.test_request_context("/"):
            set_read_only(True)
            try:
                assert [ask(1), ask(1), ask(2)] == [2, 2, 4]
            finally:
                set_read_only(False)
    assert calls == [1, 2, 1, 2]


def test_a_writing_request_and_code_outside_requests_always_ask(app: Flask) -> None:
    calls: list[int] = []

    @per_request
    def ask(n: int) -> int:
        calls.append(n)
        return n

    with app.test_request_context("/", method="POST"):
        ask(1)
        ask(1)
    ask(1)
    assert calls == [1, 1, 1]
