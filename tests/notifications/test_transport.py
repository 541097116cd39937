"""SMTP transport settings against real aiosmtpd servers: STARTTLS, implicit TLS, and login."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portal.dev.sink import free_port, stop_sink
from portal.notifications.delivery import SmtpSettings, SmtpTransport, TransientError
from tests.notifications.smtp import RecordingHandler, allow_smtp


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)
    return ctx


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"portal",
        b"s3cret",
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


def _message() -> EmailMessage:
    em = EmailMessage()
    em["From"] = "noreply@atom-lab.org"
    em["To"] = "ada@example.org"
    em["Subject"] = "TLS test"
    em["Message-ID"] = "<tls-test@atom-lab.org>"
    em.set_content("hello\n")
    return em


@pytest.fixture
def trust(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client trust the test certificate (read by ssl.create_default_context)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


def _serve(**kwargs: Any) -> Iterator[tuple[Controller, RecordingHandler, int]]:
    port = free_port()
    allow_smtp(port)
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield controller, handler, port
    finally:
        stop_sink(controller)


def _settings(port: int, security: str, password: str = "s3cret") -> SmtpSettings:  # noqa: S107 - a test server's password
    return SmtpSettings("127.0.0.1", port, security, "portal", password, timeout=5)


def test_starttls_with_login(certificate: tuple[Path, Path], trust: None) -> None:
    for _, handler, port in _serve(
        tls_context=_server_context(certificate),
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
    ):
        transport = SmtpTransport(_settings(port, "starttls"))
        transport.send(_message(), sender="noreply@atom-lab.org", recipient="ada@example.org")
        transport.close()
        assert [r.rcpt_tos for r in handler.received] == [["ada@example.org"]]


@pytest.mark.filterwarnings(
    # aiosmtpd warns that AUTH is allowed without STARTTLS; here the whole connection is TLS.
    "ignore:Requiring AUTH while not requiring TLS:UserWarning"
)
def test_implicit_tls_with_login(certificate: tuple[Path, Path], trust: None) -> None:
    for _, handler, port in _serve(
        ssl_context=_server_context(certificate),
        authenticator=_authenticator,
        auth_required=True,
        # aiosmtpd 1.4 counts only STARTTLS as TLS for AUTH; this connection is TLS from the start.
        auth_require_tls=False,
    ):
        transport = SmtpTransport(_settings(port, "ssl"))
        transport.send(_message(), sender="noreply@atom-lab.org", recipient="ada@example.org")
        transport.close()
        assert len(handler.received) == 1


def test_wrong_password_is_a_temporary_failure_not_a_dead_mail(
    certificate: tuple[Path, Path], trust: None
) -> None:
    """A refused login is the portal's set-up problem, not the mail's: it is retried later."""
    for _, handler, port in _serve(
        tls_context=_server_context(certificate),
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
    ):
        transport = SmtpTransport(_settings(port, "starttls", password="wrong"))
        with pytest.raises(TransientError, match="535"):
            transport.send(_message(), sender="noreply@atom-lab.org", recipient="ada@example.org")
        transport.close()
        assert handler.received == []


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_untrusted_certificate_is_refused(certificate: tuple[Path, Path], security: str) -> None:
    context_arg = "tls_context" if security == "starttls" else "ssl_context"
    for _, handler, port in _serve(**{context_arg: _server_context(certificate)}):
        transport = SmtpTransport(_settings(port, security))
        with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
            transport.send(_message(), sender="noreply@atom-lab.org", recipient="ada@example.org")
        assert handler.received == []


def test_unknown_security_mode_is_a_configuration_error() -> None:
    config = {
        "MAIL_SECURITY": "tls-please",
        "MAIL_SERVER": "x",
        "MAIL_PORT": 25,
        "MAIL_USERNAME": None,
        "MAIL_PASSWORD": None,
        "MAIL_TIMEOUT": 5,
    }
    with pytest.raises(ValueError, match="MAIL_SECURITY"):
        SmtpSettings.from_config(config)
