"""Outbox delivery throughput against a real local SMTP server (``make bench``; printed, not asserted).

The test suite proves delivery loses nothing and sends nothing twice; this measures how fast.
"""

from __future__ import annotations

import time
from pathlib import Path

from portal import create_app
from portal.extensions import db
from portal.notifications.delivery import deliver_pending
from portal.notifications.services import enqueue_email
from tests.benchmarks.report import Results
from tests.notifications.smtp import SmtpServer, allow_smtp
from tests.support.app import TEST_CONFIG

MAILS = 1000


def test_outbox_delivery_rate(tmp_path: Path, results: Results) -> None:
    server = SmtpServer().start()
    allow_smtp(server.port)
    app = create_app(
        {
            **TEST_CONFIG,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'mail.sqlite3'}",
            "MAIL_SERVER": server.host,
            "MAIL_PORT": server.port,
            "BASE_URL": "http://127.0.0.1:5000",
        }
    )
    try:
        with app.app_context():
            db.create_all()
            for i in range(MAILS):
                enqueue_email(
                    db.session,
                    "auth/welcome",
                    to=f"person{i:04d}@example.org",
                    context={"name": f"Person {i}", "has_affiliation": False},
                )
            db.session.commit()
            started = time.perf_counter()
            result = deliver_pending(db.session)
            seconds = time.perf_counter() - started
    finally:
        server.stop()
    print(
        f"\ndelivered {result.sent} of {MAILS} mails in {seconds:.2f} s ({result.sent / seconds:.0f}/s)"
    )
    assert result.sent == MAILS
    results.delivery = {"mails": MAILS, "seconds": seconds, "per_second": MAILS / seconds}
