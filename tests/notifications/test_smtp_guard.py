"""The autouse guard: a test that opens an SMTP connection it did not ask for fails."""

from __future__ import annotations

import smtplib

import pytest

from portal.dev.sink import free_port
from tests.notifications import smtp as guard


def test_an_smtp_connection_nobody_asked_for_fails_the_test() -> None:
    port = free_port()
    with pytest.raises(pytest.fail.Exception, match="unexpected SMTP connection"):
        smtplib.SMTP("127.0.0.1", port)
    assert guard._violations == [f"127.0.0.1:{port}"]
    guard._violations.clear()  # this test provoked it on purpose; others would fail at teardown


def test_a_port_the_test_asked_for_is_allowed() -> None:
    port = free_port()
    guard.allow_smtp(port)
    with pytest.raises(ConnectionRefusedError):  # nobody listens, but the guard let it through
        smtplib.SMTP("127.0.0.1", port, timeout=2)
