"""PDF attachments: only real, readable PDFs within the limits, stored outside ``static/`` under a
random name, served as a download only to those who may see the proposal; every refused upload
changes nothing (no row, no file)."""

from __future__ import annotations

import io
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask, render_template
from flask.testing import FlaskClient
from flask_login import login_user
from pypdf import PdfWriter
from pypdf.actions import JavaScript
from pypdf.generic import DictionaryObject, NameObject, TextStringObject
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import PermissionDeniedError
from portal.proposals.attachments import (
    add_attachment,
    attachment_folder,
    display_name,
    format_size,
    remove_attachment,
)
from portal.proposals.models import (
    Attachment,
    AttachmentKind,
    Proposal,
    ProposalState,
    TeamMember,
    TeamRole,
)
from tests.factories import make_call, make_institution, make_proposal, make_user
from tests.support.app import login

PAGE_LIMIT = 3

# --- PDFs built for the tests ------------------------------------------------------------------


def pdf(pages: int = 1, *, password: str | None = None) -> bytes:
    """A real PDF of ``pages`` blank A4 pages, encrypted with ``password`` if given."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    if password is not None:
        writer.encrypt(password)
    return _written(writer)


def _written(writer: PdfWriter) -> bytes:
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pdf_with_javascript_in_names_tree() -> bytes:
    """Document-level JavaScript in the catalog's Names tree (pypdf's ``add_open_action``, which
    replaced ``add_js`` in pypdf 7)."""
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.add_open_action(JavaScript("app.alert('hello');"))
    return _written(writer)


def _js_action() -> DictionaryObject:
    return DictionaryObject(
        {
            NameObject("/S"): NameObject("/JavaScript"),
            NameObject("/JS"): TextStringObject("app.alert('hello');"),
        }
    )


def pdf_with_javascript_open_action() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.root_object[NameObject("/OpenAction")] = _js_action()
    return _written(writer)


def pdf_with_javascript_page_action() -> bytes:
    """JavaScript run when the first page opens (the page's additional actions, /AA)."""
    writer = PdfWriter()
    page = writer.add_blank_page(width=595, height=842)
    page[NameObject("/AA")] = DictionaryObject({NameObject("/O"): _js_action()})
    return _written(writer)


def raw_pdf(*objects: bytes) -> bytes:
    """A PDF written by hand, with a correct cross-reference table: ``objects`` are the bodies of
    objects 1, 2, … (1 the catalog)."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


_CATALOG = b"<< /Type /Catalog /Pages 2 0 R%s >>"
_PAGES = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
_PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"
#: /S /JavaScript and /JS with their letters written as #xx escapes (the same names to a reader).
_ESCAPED_JS_ACTION = b"<< /S /J#61vaScript /J#53 (app.alert(1)) >>"

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 20


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def folder(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The storage folder for this test (restored afterwards); it does not exist yet."""
    path = tmp_path / "attachments"
    monkeypatch.setitem(app.config, "ATTACHMENT_FOLDER", str(path))
    return path


@pytest.fixture
def draft(db: Session) -> Proposal:
    """A draft proposal to a call that allows ``PAGE_LIMIT`` pages per PDF."""
    return make_proposal(db, call=make_call(db, page_limit=PAGE_LIMIT))


def pi_of(proposal: Proposal) -> User:
    pi = proposal.pi
    assert pi is not None
    return pi


def upload(
    client: FlaskClient,
    proposal: Proposal,
    data: bytes,
    *,
    name: str = "description.pdf",
    kind: str = "description",
) -> TestResponse:
    return client.post(
        f"/proposals/{proposal.id}/attachments",
        data={"kind": kind, "file": (io.BytesIO(data), name, "application/pdf")},
        content_type="multipart/form-data",
    )


def download(client: FlaskClient, proposal_id: int, attachment_id: int) -> TestResponse:
    """GET an attachment, its body read and its file closed."""
    resp = client.get(f"/proposals/{proposal_id}/attachments/{attachment_id}")
    resp.get_data()
    resp.close()
    return resp


def flashes(client: FlaskClient) -> list[tuple[str, str]]:
    with client.session_transaction() as s:
        return list(s.get("_flashes", []))


def assert_back_on_proposal_page(resp: TestResponse, proposal: Proposal) -> None:
    assert resp.status_code == 303
    assert urlsplit(resp.headers["Location"]).path == f"/proposals/{proposal.id}"


def rows(db: Session, proposal: Proposal) -> list[Attachment]:
    db.expire_all()
    return list(db.scalars(select(Attachment).where(Attachment.proposal_id == proposal.id)))


def files(folder: Path) -> list[Path]:
    """Everything in the storage folder, partial writes included."""
    return sorted(folder.iterdir()) if folder.exists() else []


def assert_nothing_stored(db: Session, proposal: Proposal, folder: Path) -> None:
    assert rows(db, proposal) == []
    assert files(folder) == []


def audit_actions(db: Session, action: str) -> list[AuditEvent]:
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def stored(db: Session, proposal: Proposal, folder: Path, data: bytes, name: str) -> Attachment:
    """``data`` attached by the PI through the service (committed, as a request would)."""
    att = add_attachment(
        db,
        proposal,
        actor=pi_of(proposal),
        kind=AttachmentKind.DESCRIPTION,
        filename=name,
        data=data,
        folder=folder,
        max_bytes=10 * 1024 * 1024,
    )
    db.commit()
    return att


# --- uploading ---------------------------------------------------------------------------------


def test_upload_is_stored_outside_static_under_a_random_name(
    app: Flask, client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    data = pdf(pages=2)
    login(client, pi_of(draft))
    resp = upload(client, draft, data, name="Project description.pdf", kind="description")
    assert_back_on_proposal_page(resp, draft)
    assert ("success", "Project description.pdf is attached (2 pages).") in flashes(client)

    [att] = rows(db, draft)
    assert att.kind == AttachmentKind.DESCRIPTION
    assert att.original_name == "Project description.pdf"
    assert (att.pages, att.size_bytes, att.uploaded_by_id) == (2, len(data), pi_of(draft).id)
    assert len(att.stored_name) == 32 and int(att.stored_name, 16) >= 0
    assert "description" not in att.stored_name.lower()
    [path] = files(folder)
    assert path.name == att.stored_name and path.read_bytes() == data
    assert app.static_folder is not None
    assert not path.resolve().is_relative_to(Path(app.static_folder).resolve())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [event] = audit_actions(db, "attachment.add")
    assert (event.object_id, event.details["sha256"]) == (att.id, att.sha256)


def test_the_storage_folder_defaults_to_the_instance_folder(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "ATTACHMENT_FOLDER", None)
    with app.app_context():
        assert attachment_folder() == Path(app.instance_path) / "attachments"
        monkeypatch.setitem(app.config, "ATTACHMENT_FOLDER", "/srv/portal/files")
        assert attachment_folder() == Path("/srv/portal/files")


def test_a_co_investigator_may_attach_too(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    co_pi = make_user(db, Role.RESEARCHER, institution=draft.institution)
    db.add(TeamMember(proposal_id=draft.id, user_id=co_pi.id, role=TeamRole.CO_PI))
    db.flush()
    login(client, co_pi)
    assert_back_on_proposal_page(upload(client, draft, pdf(), kind="support_letter"), draft)
    [att] = rows(db, draft)
    assert (att.kind, att.uploaded_by_id) == (AttachmentKind.SUPPORT_LETTER, co_pi.id)


def test_a_body_over_max_content_length_is_a_413(
    app: Flask,
    client: FlaskClient,
    db: Session,
    folder: Path,
    draft: Proposal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    login(client, pi_of(draft))
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 4096)
    resp = upload(client, draft, pdf() + b"\n" * 8192)
    assert resp.status_code == 413
    assert_nothing_stored(db, draft, folder)


def test_a_file_over_attachment_max_bytes_is_a_form_error(
    app: Flask,
    client: FlaskClient,
    db: Session,
    folder: Path,
    draft: Proposal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    login(client, pi_of(draft))
    data = pdf()
    monkeypatch.setitem(app.config, "ATTACHMENT_MAX_BYTES", len(data) - 1)
    assert len(data) < app.config["MAX_CONTENT_LENGTH"]
    resp = upload(client, draft, data)
    assert_back_on_proposal_page(resp, draft)
    assert ("danger", f"The file is larger than {len(data) - 1} bytes.") in flashes(client)
    assert_nothing_stored(db, draft, folder)


BAD_FILES = {
    "a PNG named .pdf": (PNG + b"\x00" * 200, "not a PDF"),
    "an empty file": (b"", "empty"),
    "HTML with a PDF inside": (b"<!doctype html><html><body>" + pdf(), "not a PDF"),
    "a ZIP with a PDF inside": (ZIP + pdf(), "not a PDF"),
    "a PDF with a ZIP appended": (pdf() + ZIP + b"x" * 2000, "not a PDF"),
    "%PDF- then garbage": (
        b"%PDF-1.7\n" + b"<script>alert(1)</script>\n" * 40 + b"%%EOF\n",
        "cannot be read",
    ),
    "a truncated PDF": (pdf()[:-60] + b"\n%%EOF\n", "cannot be read"),
    "an encrypted PDF": (pdf(password="secret"), "encrypted"),
    "an encrypted PDF with an empty password": (pdf(password=""), "encrypted"),
    "JavaScript in the Names tree": (pdf_with_javascript_in_names_tree(), "JavaScript"),
    "JavaScript as OpenAction": (pdf_with_javascript_open_action(), "JavaScript"),
    "JavaScript in a page's /AA": (pdf_with_javascript_page_action(), "JavaScript"),
    "JavaScript behind #xx-escaped names": (
        raw_pdf(_CATALOG % (b" /OpenAction " + _ESCAPED_JS_ACTION), _PAGES, _PAGE),
        "JavaScript",
    ),
    "JavaScript in an object nothing refers to": (
        raw_pdf(_CATALOG % b"", _PAGES, _PAGE, _ESCAPED_JS_ACTION),
        "JavaScript",
    ),
    "more pages than the call allows": (
        pdf(pages=PAGE_LIMIT + 1),
        f"The PDF has {PAGE_LIMIT + 1} pages; this call allows at most {PAGE_LIMIT}",
    ),
}


@pytest.mark.parametrize("data, reason", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_every_unacceptable_file_is_a_form_error_that_changes_nothing(
    client: FlaskClient,
    db: Session,
    folder: Path,
    draft: Proposal,
    data: bytes,
    reason: str,
) -> None:
    login(client, pi_of(draft))
    resp = upload(client, draft, data)
    assert_back_on_proposal_page(resp, draft)
    [(category, message)] = flashes(client)
    assert category == "danger" and reason in message
    assert_nothing_stored(db, draft, folder)
    assert audit_actions(db, "attachment.add") == []


def test_a_hand_written_pdf_without_javascript_is_accepted(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    """The control for the hand-written cases above: they are refused for their JavaScript."""
    login(client, pi_of(draft))
    upload(client, draft, raw_pdf(_CATALOG % b"", _PAGES, _PAGE))
    assert [a.pages for a in rows(db, draft)] == [1]


@pytest.mark.parametrize(
    "kind, with_file, reason",
    [("description", False, "Choose a PDF file to upload."), ("poem", True, "Kind of document")],
    ids=["no file", "unknown kind"],
)
def test_an_incomplete_form_is_a_form_error(
    client: FlaskClient,
    db: Session,
    folder: Path,
    draft: Proposal,
    kind: str,
    with_file: bool,
    reason: str,
) -> None:
    login(client, pi_of(draft))
    form: dict[str, object] = {"kind": kind}
    if with_file:
        form["file"] = (io.BytesIO(pdf()), "a.pdf", "application/pdf")
    resp = client.post(
        f"/proposals/{draft.id}/attachments", data=form, content_type="multipart/form-data"
    )
    assert_back_on_proposal_page(resp, draft)
    assert any(reason in message for _, message in flashes(client))
    assert_nothing_stored(db, draft, folder)


def test_a_traversal_file_name_is_only_a_label(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal, tmp_path: Path
) -> None:
    login(client, pi_of(draft))
    upload(client, draft, pdf(), name="../../etc/passwd.pdf")
    [att] = rows(db, draft)
    assert att.original_name == "passwd.pdf"
    assert [p.name for p in files(folder)] == [att.stored_name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attachments"]


@pytest.mark.parametrize(
    "uploaded, shown",
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("C:\\Users\\ada\\..\\Letter.pdf", "Letter.pdf"),
        ("report\x00\r\n.pdf", "report.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("..", "attachment.pdf"),
        ("   ", "attachment.pdf"),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
        ("Projektbeschreibung Müller.pdf", "Projektbeschreibung Müller.pdf"),
    ],
)
def test_the_original_name_is_kept_sanitised(uploaded: str, shown: str) -> None:
    assert display_name(uploaded) == shown
    assert len(display_name(uploaded)) <= 255


def test_sizes_read_as_people_write_them() -> None:
    assert [format_size(n) for n in (512, 1536, 10 * 1024 * 1024, 2_500_000)] == [
        "512 bytes",
        "1.5 KB",
        "10 MB",
        "2.4 MB",
    ]


def test_a_rolled_back_upload_leaves_no_file(db: Session, folder: Path, draft: Proposal) -> None:
    db.commit()  # the proposal stays; only what follows is rolled back
    add_attachment(
        db,
        draft,
        actor=pi_of(draft),
        kind=AttachmentKind.OTHER,
        filename="a.pdf",
        data=pdf(),
        folder=folder,
        max_bytes=10 * 1024 * 1024,
    )
    assert len(files(folder)) == 1
    db.rollback()
    assert_nothing_stored(db, draft, folder)


# --- who may change attachments ----------------------------------------------------------------


def test_attachments_of_a_submitted_proposal_no_longer_change(
    client: FlaskClient, db: Session, folder: Path
) -> None:
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    [att] = proposal.attachments
    login(client, pi_of(proposal))

    assert upload(client, proposal, pdf()).status_code == 403
    resp = client.post(f"/proposals/{proposal.id}/attachments/{att.id}/remove")
    assert resp.status_code == 403
    assert [a.id for a in rows(db, proposal)] == [att.id]
    assert files(folder) == []
    with pytest.raises(PermissionDeniedError):
        remove_attachment(db, att, actor=pi_of(proposal), folder=folder)


def test_a_team_member_who_is_not_an_investigator_may_not_attach(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    member = make_user(db, Role.RESEARCHER, institution=draft.institution)
    db.add(TeamMember(proposal_id=draft.id, user_id=member.id, role=TeamRole.MEMBER))
    db.flush()
    login(client, member)
    assert upload(client, draft, pdf()).status_code == 403
    assert_nothing_stored(db, draft, folder)


def test_removing_deletes_the_row_then_the_file(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    att = stored(db, draft, folder, pdf(), "old.pdf")
    att_id, path = att.id, folder / att.stored_name
    login(client, pi_of(draft))
    resp = client.post(f"/proposals/{draft.id}/attachments/{att_id}/remove")
    assert urlsplit(resp.headers["Location"]).path == f"/proposals/{draft.id}"
    assert ("success", "old.pdf is removed.") in flashes(client)
    assert_nothing_stored(db, draft, folder)
    assert not path.exists()
    [event] = audit_actions(db, "attachment.remove")
    assert (event.object_id, event.details["name"]) == (att_id, "old.pdf")


def test_a_removal_keeps_the_file_until_it_is_committed(
    db: Session, folder: Path, draft: Proposal
) -> None:
    att = stored(db, draft, folder, pdf(), "a.pdf")
    path = folder / att.stored_name
    remove_attachment(db, att, actor=pi_of(draft), folder=folder)
    assert path.exists()  # a rollback now would leave row and file as they were
    db.commit()
    assert not path.exists()


# --- downloading -------------------------------------------------------------------------------


def test_download_is_an_attachment_that_no_browser_renders(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    data = pdf(pages=2)
    att = stored(db, draft, folder, data, "Projektbeschreibung Müller.pdf")
    login(client, pi_of(draft))
    resp = download(client, draft.id, att.id)
    assert resp.status_code == 200
    assert resp.data == data
    assert resp.headers["Content-Type"] == "application/pdf"
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Projektbeschreibung%20M%C3%BCller.pdf" in disposition
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert resp.headers["Cache-Control"] == "private, no-store"


def test_a_download_suggests_a_pdf_name_whatever_was_uploaded(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    att = stored(db, draft, folder, pdf(), 'letter"; filename=evil.html')
    login(client, pi_of(draft))
    resp = download(client, draft.id, att.id)
    assert resp.headers["Content-Disposition"] == (
        'attachment; filename="letter\\"; filename=evil.html.pdf"'
    )


@pytest.fixture
def submitted_elsewhere(db: Session, folder: Path) -> tuple[Proposal, Attachment]:
    """A submitted proposal (its institution's officials see it now) with its file stored."""
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    [att] = proposal.attachments
    folder.mkdir()
    (folder / att.stored_name).write_bytes(pdf())
    return proposal, att


def test_the_institutions_official_and_staff_download_once_submitted(
    client: FlaskClient, db: Session, submitted_elsewhere: tuple[Proposal, Attachment]
) -> None:
    proposal, att = submitted_elsewhere
    login(client, make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution))
    assert download(client, proposal.id, att.id).status_code == 200
    remove = f"/proposals/{proposal.id}/attachments/{att.id}/remove"
    assert client.post(remove).status_code == 403  # may see it, may not change it
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    assert download(client, proposal.id, att.id).status_code == 200


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.SIGNING_OFFICIAL])
def test_people_of_another_institution_get_a_404(
    client: FlaskClient,
    db: Session,
    folder: Path,
    submitted_elsewhere: tuple[Proposal, Attachment],
    role: Role,
) -> None:
    proposal, att = submitted_elsewhere
    login(client, make_user(db, role, institution=make_institution(db)))
    base = f"/proposals/{proposal.id}/attachments"
    assert client.get(f"{base}/{att.id}").status_code == 404
    assert client.post(f"{base}/{att.id}/remove").status_code == 404
    assert upload(client, proposal, pdf()).status_code == 404
    assert [a.id for a in rows(db, proposal)] == [att.id]
    assert [p.name for p in files(folder)] == [att.stored_name]


def test_an_attachment_under_another_proposals_id_is_a_404(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    """The PI of two proposals asks for one's attachment under the other's id."""
    att = stored(db, draft, folder, pdf(), "a.pdf")
    other = make_proposal(db, pi=pi_of(draft), call=draft.call)
    login(client, pi_of(draft))
    assert client.get(f"/proposals/{other.id}/attachments/{att.id}").status_code == 404
    assert client.post(f"/proposals/{other.id}/attachments/{att.id}/remove").status_code == 404
    assert client.get(f"/proposals/{draft.id}/attachments/{att.id + 1000}").status_code == 404
    assert len(rows(db, draft)) == 1 and (folder / att.stored_name).exists()


def test_anonymous_visitors_are_sent_to_log_in(
    client: FlaskClient, db: Session, folder: Path, draft: Proposal
) -> None:
    att = stored(db, draft, folder, pdf(), "a.pdf")
    resp = client.get(f"/proposals/{draft.id}/attachments/{att.id}")
    assert resp.status_code == 302 and "/auth/login" in resp.headers["Location"]
    assert upload(client, draft, pdf()).status_code == 302
    assert len(rows(db, draft)) == 1


# --- the list on the proposal page -------------------------------------------------------------


def _partial(app: Flask, user: User, proposal: Proposal) -> str:
    with app.test_request_context():
        login_user(user)
        return render_template("proposals/_attachments.html", proposal=proposal)


def test_the_list_shows_each_file_and_the_form_shows_the_limits(
    app: Flask, db: Session, folder: Path, draft: Proposal
) -> None:
    att = stored(db, draft, folder, pdf(pages=2), "<img src=x onerror=alert(1)>.pdf")
    html = _partial(app, pi_of(draft), draft)
    assert "Project description" in html
    assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in html and "<img" not in html
    assert f'href="/proposals/{draft.id}/attachments/{att.id}"' in html
    assert f'action="/proposals/{draft.id}/attachments/{att.id}/remove"' in html
    assert 'enctype="multipart/form-data"' in html
    assert 'accept="application/pdf"' in html
    upload_form = html[html.index('enctype="multipart/form-data"') :]
    assert 'name="csrf_token"' in upload_form
    assert f"at most {PAGE_LIMIT} pages and 10 MB" in html
    assert '<label class="form-label" for="file">PDF file</label>' in html
    assert '<label class="form-label" for="kind">Kind of document</label>' in html


def test_those_who_may_not_change_attachments_see_only_the_list(
    app: Flask, db: Session, folder: Path
) -> None:
    proposal = make_proposal(db, state=ProposalState.SUBMITTED)
    html = _partial(app, pi_of(proposal), proposal)
    assert "description.pdf" in html
    assert "/remove" not in html and "multipart/form-data" not in html


def test_nothing_attached_yet_says_so(
    app: Flask, db: Session, folder: Path, draft: Proposal
) -> None:
    assert "No documents attached yet." in _partial(app, pi_of(draft), draft)
