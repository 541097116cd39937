"""Turning an outbox row into a MIME message: templates, links, unsubscribe tokens and safe headers.

Rendering happens in the worker, outside any request, so links are built from the ``BASE_URL``
setting rather than from a request's host. Header values never contain user text unfiltered: the
subject has every control character (CR, LF …) removed, display names are encoded by the ``email``
package's header registry, and the envelope recipient is the validated address stored in the row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from portal.core.errors import ValidationError
from portal.core.models import utcnow
from portal.notifications.kinds import get_kind
from portal.notifications.models import OutboxMessage

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]+")
#: A plain ``local@domain`` address: no spaces, no angle brackets, no control characters.
_ADDRESS = re.compile(r"^[^\s@<>(),;:\"\[\]\\]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}$")
_UNSUBSCRIBE_SALT = "notifications.unsubscribe"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def clean_header_text(value: str, limit: int = 250) -> str:
    """One line of header text: control characters (CR, LF, tab …) become spaces, runs collapse."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def check_address(addr: str) -> str:
    """The address itself if it is one plain ``local@domain`` address; otherwise ValidationError."""
    value = addr.strip()
    if not _ADDRESS.match(value) or len(value) > 320:
        raise ValidationError(f"{clean_header_text(addr, 80)!r} is not a usable e-mail address.")
    return value


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute link to ``endpoint`` under ``BASE_URL`` (works outside requests, in the worker)."""
    base = urlsplit(str(current_app.config["BASE_URL"]).rstrip("/"))
    adapter = current_app.url_map.bind(
        base.netloc, script_name=base.path or "/", url_scheme=base.scheme or "http"
    )
    return str(adapter.build(endpoint, values, force_external=True))


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=_UNSUBSCRIBE_SALT)


def unsubscribe_token(user_id: int, kind: str) -> str:
    """A signed token naming one person and one kind; it cannot be altered to name another."""
    return _serializer().dumps({"u": user_id, "k": kind})


def read_unsubscribe_token(token: str) -> tuple[int, str]:
    """(user id, kind) from a token, or ValidationError for anything forged, altered or malformed."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        raise ValidationError("This unsubscribe link is not valid.") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("u"), int)
        or not isinstance(data.get("k"), str)
    ):
        raise ValidationError("This unsubscribe link is not valid.")
    return data["u"], data["k"]


def unsubscribe_url(msg: OutboxMessage) -> str | None:
    """The one-click unsubscribe link for optional kinds sent to a portal user, else None."""
    if msg.recipient_id is None or get_kind(msg.template).mandatory:
        return None
    return external_url(
        "notifications.unsubscribe", token=unsubscribe_token(msg.recipient_id, msg.template)
    )


def _context(msg: OutboxMessage) -> dict[str, Any]:
    return {
        **msg.context,
        "recipient_name": msg.to_name,
        "site_name": current_app.config["SITE_NAME"],
        "link": external_url,
        "settings_url": external_url("notifications.settings"),
        "unsubscribe_url": unsubscribe_url(msg),
        "kind": get_kind(msg.template),
    }


def render_email(msg: OutboxMessage) -> RenderedEmail:
    """Render the subject, plain-text and HTML parts of ``msg`` from ``templates/emails/``."""
    env = current_app.jinja_env
    txt = env.get_template(f"emails/{msg.template}.txt")
    html = env.get_template(f"emails/{msg.template}.html")
    ctx = _context(msg)
    subject = "".join(txt.blocks["subject"](txt.new_context(ctx)))
    return RenderedEmail(
        subject=clean_header_text(subject),
        text=txt.render(ctx).strip() + "\n",
        html=html.render(ctx).strip() + "\n",
    )


def render_summary(msg: OutboxMessage) -> tuple[str, str]:
    """(subject, plain-text body without greeting and footer), for a mail shown inside a digest."""
    txt = current_app.jinja_env.get_template(f"emails/{msg.template}.txt")
    ctx = txt.new_context(_context(msg))
    subject = clean_header_text("".join(txt.blocks["subject"](ctx)))
    return subject, "".join(txt.blocks["body"](ctx)).strip()


def sender_address() -> Address:
    name, addr = parseaddr(str(current_app.config["MAIL_DEFAULT_SENDER"]))
    local, _, domain = check_address(addr).partition("@")
    return Address(display_name=clean_header_text(name), username=local, domain=domain)


class MailPolicy(EmailPolicy):
    """Python's default mail policy, except for headers that carry a URL in angle brackets: those
    are never folded into RFC 2047 encoded-words (mail clients then ignore them); RFC 2369 wants
    the literal ``<https://…>``, which fits the 998 characters a header line may have."""

    def fold(self, name: str, value: str) -> str:
        return str(EmailPolicy.fold(self._for(name), name, value))

    def fold_binary(self, name: str, value: str) -> bytes:
        return EmailPolicy.fold_binary(self._for(name), name, value)

    def _for(self, name: str) -> EmailPolicy:
        return self.clone(max_line_length=998) if name.lower() in _URL_HEADERS else self


_URL_HEADERS = frozenset({"list-unsubscribe"})
MAIL_POLICY = MailPolicy()


def build_message(msg: OutboxMessage, rendered: RenderedEmail) -> EmailMessage:
    """The MIME message (multipart/alternative: text, then HTML) with its fixed Message-ID."""
    local, _, domain = check_address(msg.to_addr).partition("@")
    em = EmailMessage(policy=MAIL_POLICY)
    em["From"] = sender_address()
    em["To"] = Address(
        display_name=clean_header_text(msg.to_name or ""), username=local, domain=domain
    )
    em["Subject"] = rendered.subject
    em["Date"] = format_datetime(utcnow())
    em["Message-ID"] = msg.message_id
    em["Auto-Submitted"] = "auto-generated"
    unsubscribe = unsubscribe_url(msg)
    if unsubscribe:
        # RFC 8058 one-click unsubscribe: mail clients POST "List-Unsubscribe=One-Click" to the URL.
        em["List-Unsubscribe"] = f"<{unsubscribe}>"
        em["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    em.set_content(rendered.text)
    em.add_alternative(rendered.html, subtype="html")
    return em
