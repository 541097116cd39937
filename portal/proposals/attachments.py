"""A proposal's PDF attachments (the project description, letters of support): only real,
readable PDFs within the size and the call's page limit, without encryption or JavaScript, kept
outside ``static/`` under a name the server chose. Services flush; the caller commits.

The file and its row share one fate: a file written for an upload that is then rolled back is
deleted, and a removed attachment's file is deleted only once the removal is committed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import unicodedata
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from flask import Response, abort, current_app, send_file
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

from portal.auth.models import User
from portal.core import audit
from portal.core.errors import ValidationError
from portal.core.models import AnySession
from portal.core.permissions import check
from portal.proposals.models import Attachment, AttachmentKind, Proposal
from portal.proposals.permissions import can_attach_to_proposal

if TYPE_CHECKING:
    from pypdf import PdfReader

log = logging.getLogger(__name__)

#: Every PDF starts with this, at the very first byte (readers accept it anywhere in the first
#: 1024 bytes, which is how a file can be a PDF and an HTML page or a ZIP archive at once).
PDF_MAGIC = b"%PDF-"
#: What may follow a PDF's last ``%%EOF``: line ends and padding, never another file.
_TRAILING = b" \t\r\n\x00\x0c"
#: ``/JS`` or ``/JavaScript`` written out anywhere in the file (an old revision, an object no
#: cross-reference table lists); names written with ``#xx`` escapes are found by the object walk.
_RAW_JAVASCRIPT = re.compile(rb"/J(?:avaScript|S)(?=[\s/<>\[\]()%{}]|$)")
_JAVASCRIPT_NAMES = frozenset({"/JS", "/JavaScript"})
#: Longest original file name kept (the column's size).
MAX_NAME = 255
_STORED_NAME = re.compile(r"[0-9a-f]{32}")


def add_attachment(
    session: AnySession,
    proposal: Proposal,
    *,
    actor: User,
    kind: AttachmentKind,
    filename: str,
    data: bytes,
    folder: Path,
    max_bytes: int,
) -> Attachment:
    """The PI or a co-PI attaches a PDF to the proposal while it is a draft (or returned): a real
    PDF (it starts with ``%PDF-``, nothing follows its end, pypdf reads it strictly), at most
    ``max_bytes``, not encrypted, without JavaScript, within the call's page limit. It is stored
    in ``folder`` under a random name; its own name is kept only to show."""
    check(can_attach_to_proposal, actor, proposal)
    pages = pdf_pages(data, max_bytes=max_bytes)
    limit = proposal.call.page_limit
    if pages > limit:
        raise ValidationError(
            f"The PDF has {pages} pages; this call allows at most {limit} per attachment."
        )
    attachment = Attachment(
        proposal=proposal,
        kind=kind,
        stored_name=uuid.uuid4().hex,
        original_name=display_name(filename),
        size_bytes=len(data),
        pages=pages,
        sha256=hashlib.sha256(data).hexdigest(),
        uploaded_by_id=actor.id,
    )
    path = attachment_path(attachment, folder)
    _write_atomically(path, data)
    try:
        session.add(attachment)
        session.flush()
        _after_outcome(session, rolled_back=lambda: path.unlink(missing_ok=True))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    audit.record(
        session,
        "attachment.add",
        actor=actor,
        obj=attachment,
        proposal_id=proposal.id,
        kind=kind.value,
        name=attachment.original_name,
        size_bytes=attachment.size_bytes,
        pages=pages,
        sha256=attachment.sha256,
    )
    return attachment


def remove_attachment(
    session: AnySession, attachment: Attachment, *, actor: User, folder: Path
) -> Proposal:
    """The PI or a co-PI removes an attachment while the proposal is a draft (or returned). The
    row goes first; its file is deleted once that is committed."""
    proposal = attachment.proposal
    check(can_attach_to_proposal, actor, proposal)
    path = attachment_path(attachment, folder)
    details = {
        "proposal_id": proposal.id,
        "kind": attachment.kind.value,
        "name": attachment.original_name,
        "sha256": attachment.sha256,
    }
    audit.record(session, "attachment.remove", actor=actor, obj=attachment, **details)
    session.delete(attachment)
    session.flush()
    session.expire(proposal, ["attachments"])
    _after_outcome(session, committed=lambda: path.unlink(missing_ok=True))
    return proposal


def attachment_path(attachment: Attachment, folder: Path) -> Path:
    """Where ``attachment``'s file is kept in ``folder``."""
    if not _STORED_NAME.fullmatch(attachment.stored_name):
        raise ValueError(f"not a stored attachment name: {attachment.stored_name!r}")
    return folder / attachment.stored_name


# --- what counts as an acceptable PDF ----------------------------------------------------------


def pdf_pages(data: bytes, *, max_bytes: int) -> int:
    """The number of pages of ``data`` if it is an acceptable PDF; else a ValidationError that
    says why (too large, not a PDF, unreadable, encrypted, JavaScript, no pages)."""
    if not data:
        raise ValidationError("The file is empty.")
    if len(data) > max_bytes:
        raise ValidationError(f"The file is larger than {format_size(max_bytes)}.")
    end = data.rfind(b"%%EOF")
    if not data.startswith(PDF_MAGIC) or end < 0 or data[end + 5 :].strip(_TRAILING):
        raise ValidationError("The file is not a PDF. Upload a PDF document.")
    # pypdf is imported on the first upload, not by every worker at start (memory per worker).
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=True)
        if reader.is_encrypted:
            raise ValidationError(
                "The PDF is encrypted (password-protected). Upload it without encryption."
            )
        if _RAW_JAVASCRIPT.search(data) or _has_javascript(reader):
            raise ValidationError(
                "The PDF contains JavaScript, which is not accepted. Save or print it again as "
                "a plain PDF (e.g. PDF/A)."
            )
        pages = len(reader.pages)
    except ValidationError:
        raise
    except Exception as e:  # pypdf raises many kinds of error on a malformed file
        raise ValidationError(
            "The PDF cannot be read (it is damaged or not a standard PDF). Export it again."
        ) from e
    if pages < 1:
        raise ValidationError("The PDF has no pages.")
    return pages


def _has_javascript(reader: PdfReader) -> bool:
    """Whether any object of the document — the catalog and its Names tree, OpenAction and
    additional actions (AA), pages, annotations, form fields, or any other object its
    cross-reference tables list — holds a ``/JS`` or ``/JavaScript`` name."""
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, NameObject

    stack: list[Any] = [reader.trailer]
    for generation, numbers in reader.xref.items():
        stack += [IndirectObject(n, generation, reader) for n in numbers]
    stack += [IndirectObject(n, 0, reader) for n in reader.xref_objStm]
    seen: set[tuple[int, int]] = set()
    while stack:
        obj = stack.pop()
        if isinstance(obj, IndirectObject):
            key = (obj.idnum, obj.generation)
            if key in seen:
                continue
            seen.add(key)
            obj = obj.get_object()
        if isinstance(obj, NameObject):
            if obj in _JAVASCRIPT_NAMES:
                return True
        elif isinstance(obj, DictionaryObject):  # streams too: their dictionary, not their data
            if any(k in _JAVASCRIPT_NAMES for k in obj):
                return True
            stack += obj.values()
        elif isinstance(obj, ArrayObject):
            stack += obj
    return False


# --- names, sizes and files --------------------------------------------------------------------


def display_name(filename: str) -> str:
    """The uploader's file name as it may be shown: no folder parts, no control or invisible
    formatting characters (e.g. right-to-left overrides), at most 255 characters."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    name = unicodedata.normalize("NFC", name).strip()
    if name in ("", ".", ".."):
        return "attachment.pdf"
    if len(name) > MAX_NAME:
        _, dot, suffix = name.rpartition(".")
        keep = f"{dot}{suffix}" if dot and len(suffix) <= 10 else ""
        name = name[: MAX_NAME - len(keep)] + keep
    return name


def format_size(size: int) -> str:
    """``size`` bytes for people: ``512 bytes``, ``340 KB``, ``10 MB`` (1 MB = 1,048,576 bytes)."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = (size / 1024, "KB") if size < 1024 * 1024 else (size / 1024 / 1024, "MB")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` (owner-only, in an owner-only folder) so that it exists complete or not at
    all: into a temporary name first, then renamed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


#: ``Session.info`` keys: the file actions waiting for a transaction's outcome, and the root
#: transaction that just committed.
_PENDING = "portal.proposals.attachments.pending"
_COMMITTED = "portal.proposals.attachments.committed"

_Action = Callable[[], None]


def _after_outcome(
    session: AnySession, *, committed: _Action | None = None, rolled_back: _Action | None = None
) -> None:
    """Run ``committed`` once the session's current transaction commits, or ``rolled_back`` once
    it ends any other way (rollback, close); a savepoint's release is not the commit."""
    real: Session = session() if isinstance(session, scoped_session) else session
    root = real.get_transaction()
    if root is None:
        raise RuntimeError("no transaction: flush the change first")
    real.info.setdefault(_PENDING, []).append((root, committed, rolled_back))
    if not event.contains(real, "after_transaction_end", _settle):
        event.listen(real, "after_commit", _note_commit)
        event.listen(real, "after_transaction_end", _settle)


def _note_commit(session: Session) -> None:
    if session.get_nested_transaction() is None:  # the whole transaction, not a savepoint
        session.info[_COMMITTED] = session.get_transaction()


def _settle(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    committed = session.info.pop(_COMMITTED, None) is transaction
    pending: list[tuple[SessionTransaction, _Action | None, _Action | None]] = session.info.get(
        _PENDING, []
    )
    session.info[_PENDING] = [p for p in pending if p[0] is not transaction]
    for root, on_commit, on_rollback in pending:
        then = on_commit if committed else on_rollback
        if root is transaction and then is not None:
            then()


#: Downloads are never rendered: a sandbox with nothing allowed, whatever a browser makes of them.
DOWNLOAD_CSP = "sandbox; default-src 'none'"


def attachment_folder() -> Path:
    """Where attachments are kept: ``ATTACHMENT_FOLDER``, relative to the instance folder (its
    default is ``instance/attachments``); created owner-only at the first upload."""
    return Path(current_app.instance_path) / (
        current_app.config["ATTACHMENT_FOLDER"] or "attachments"
    )


def download_response(attachment: Attachment) -> Response:
    """The PDF as a download (the caller checked who may have it): ``attachment`` disposition,
    nosniff, a sandbox CSP, never cached; 404 if its file is missing."""
    path = attachment_path(attachment, attachment_folder())
    if not path.is_file():
        log.error("attachment %s: its file %s is missing", attachment.id, path)
        abort(404)
    name = attachment.original_name
    response = send_file(
        path,
        mimetype="application/pdf",
        as_attachment=True,
        download_name=name if name.lower().endswith(".pdf") else f"{name}.pdf",
        conditional=False,
        etag=False,
        last_modified=None,
        max_age=None,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = DOWNLOAD_CSP
    response.headers["Cache-Control"] = "private, no-store"
    return response
