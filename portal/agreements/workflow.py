"""Which state may follow which for template versions, agreements and signatures, who may take each
step, and what each step tells whom.

Versions: draft → published → superseded (by the next published one). Agreements: awaiting
signatures → signed (the last signature completes it) / declined (a party declined) / withdrawn (by
program staff); signed → superseded (its re-consent successor was signed). Signatures: to sign →
signed / declined, each party in its turn.
"""

from __future__ import annotations

from typing import Any

from portal.agreements import emails, permissions
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    Signature,
    TemplateVersion,
)
from portal.agreements.models import SignatureState as G
from portal.agreements.models import VersionState as V
from portal.agreements.text import check_body, sha256
from portal.core.errors import ConflictError
from portal.core.models import AnySession, utcnow
from portal.core.workflow import Step, Transition, Workflow
from portal.institutions.models import InstitutionState

A = AgreementState

VERSION_TRANSITIONS: dict[str, Transition[V]] = {
    "publish": Transition(frozenset({V.DRAFT}), V.PUBLISHED, "Publish this version"),
    "supersede": Transition(frozenset({V.PUBLISHED}), V.SUPERSEDED, "Supersede"),
}


def _publishable(step: Step[TemplateVersion, V]) -> None:
    check_body(step.obj.template.kind, step.obj.body)


def _version_fields(step: Step[TemplateVersion, V]) -> dict[str, Any]:
    if step.action != "publish":
        return {}
    return {
        "published_at": utcnow(),
        "published_by_id": step.actor.id,
        "text_sha256": sha256(step.obj.body),
    }


def _supersede_previous(session: AnySession, step: Step[TemplateVersion, V]) -> None:
    """The version published before this one stops being the one agreements are issued from."""
    for previous in step.obj.template.versions:
        if previous.id != step.obj.id and previous.state == V.PUBLISHED:
            VERSION_WORKFLOW.run(session, previous, "supersede", actor=step.actor)


VERSION_WORKFLOW: Workflow[TemplateVersion, V] = Workflow(
    name="agreement_version",
    noun="version",
    model=TemplateVersion,
    transitions=VERSION_TRANSITIONS,
    permissions={
        "publish": permissions.can_publish_version,
        "supersede": permissions.can_publish_version,
    },
    mails={},
    # Publishing asks nobody by itself: each agreement it re-issues for re-consent sends its own
    # "please sign again" mail (services.issue), and superseding is part of publishing.
    silent=frozenset(VERSION_TRANSITIONS),
    fields=_version_fields,
    checks={"publish": _publishable},
    effects={"publish": _supersede_previous},
)


AGREEMENT_TRANSITIONS: dict[str, Transition[A]] = {
    "complete": Transition(frozenset({A.AWAITING}), A.ACTIVE, "Complete"),
    "decline": Transition(
        frozenset({A.AWAITING}), A.DECLINED, "Decline to sign", needs_reason=True, style="danger"
    ),
    "withdraw": Transition(
        frozenset({A.AWAITING}), A.WITHDRAWN, "Withdraw", needs_reason=True, style="secondary"
    ),
    "supersede": Transition(frozenset({A.ACTIVE}), A.SUPERSEDED, "Supersede"),
}


def _agreement_fields(step: Step[Agreement, A]) -> dict[str, Any]:
    out: dict[str, Any] = {"state_changed_at": utcnow()}
    if step.action == "complete":
        out["completed_at"] = utcnow()
    if step.action in ("decline", "withdraw"):
        out["reason"] = step.reason
    return out


def _supersede_replaced(session: AnySession, step: Step[Agreement, A]) -> None:
    """A re-consent signed in full takes the place of the agreement it replaces."""
    old = step.obj.replaces
    if old is not None and old.state == A.ACTIVE:
        AGREEMENT_WORKFLOW.run(session, old, "supersede", actor=step.actor, by=step.obj.id)


AGREEMENT_WORKFLOW: Workflow[Agreement, A] = Workflow(
    name="agreement",
    noun="agreement",
    model=Agreement,
    transitions=AGREEMENT_TRANSITIONS,
    permissions={
        "complete": permissions.can_complete_agreement,
        "decline": permissions.can_decline_agreement,
        "withdraw": permissions.can_withdraw_agreement,
        "supersede": permissions.can_supersede_agreement,
    },
    mails={"complete": emails.fully_signed, "decline": emails.declined},
    # Withdrawing is program staff correcting their own issue (the corrected agreement asks the
    # signers again), or follows the end of its subject (whose own mail says so); superseding is
    # part of the successor's completion, whose mail tells all.
    silent=frozenset({"withdraw", "supersede"}),
    fields=_agreement_fields,
    effects={"complete": _supersede_replaced},
)


SIGNATURE_TRANSITIONS: dict[str, Transition[G]] = {
    "sign": Transition(frozenset({G.PENDING}), G.SIGNED, "Sign"),
    "decline": Transition(
        frozenset({G.PENDING}), G.DECLINED, "Decline to sign", needs_reason=True, style="danger"
    ),
}


def _in_turn(step: Step[Signature, G]) -> None:
    """The agreement is still being signed, every earlier party has signed, and the institution
    may still sign (a suspended or withdrawn institution's agreements take no new signatures, but
    for a suspended one's partnership agreement)."""
    signature = step.obj
    agreement = signature.agreement
    if agreement.state != A.AWAITING:
        raise ConflictError(
            # Worded like the runner's own refusals: whoever signed or decided in between is
            # told their page was out of date, in the same words everywhere.
            f"Signing is not possible while the agreement is {agreement.state.label.lower()}: "
            "it takes no more signatures."
        )
    waiting = [
        s for s in agreement.signatures if s.position < signature.position and s.state != G.SIGNED
    ]
    if waiting:
        raise ConflictError(
            "Not your turn yet: " + ", ".join(s.party for s in waiting) + " must sign first."
        )
    institution = agreement.institution
    if institution is None:
        return
    # A suspended institution's partnership agreement stays signable: it is the way back (no
    # reinstatement without one in force, e.g. after a re-consent date passed).
    way_back = (
        institution.state == InstitutionState.SUSPENDED
        and agreement.kind == AgreementKind.PARTNERSHIP
    )
    if (
        institution.state in (InstitutionState.SUSPENDED, InstitutionState.WITHDRAWN)
        and not way_back
    ):
        raise ConflictError(
            f"{institution.name} is {institution.state.label.lower()}: its agreements take no "
            "new signatures until program staff reinstate it."
        )


def _after_signature(session: AnySession, step: Step[Signature, G]) -> None:
    """The last signature completes the agreement; a refusal declines it."""
    agreement = step.obj.agreement
    if step.action == "decline":
        AGREEMENT_WORKFLOW.run(session, agreement, "decline", actor=step.actor, reason=step.reason)
    elif all(s.state == G.SIGNED for s in agreement.signatures):
        AGREEMENT_WORKFLOW.run(session, agreement, "complete", actor=step.actor)


SIGNATURE_WORKFLOW: Workflow[Signature, G] = Workflow(
    name="signature",
    noun="signature",
    model=Signature,
    transitions=SIGNATURE_TRANSITIONS,
    permissions={"sign": permissions.can_sign, "decline": permissions.can_sign},
    mails={"sign": emails.signed},
    # The agreement's decline, taken in the same step, tells everyone.
    silent=frozenset({"decline"}),
    fields=lambda step: {"decline_reason": step.reason} if step.action == "decline" else {},
    checks={"sign": _in_turn, "decline": _in_turn},
    effects={"sign": _after_signature, "decline": _after_signature},
)
