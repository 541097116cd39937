"""Demo agreements: the three templates (partnership, project contribution, data use) with real
wording, partnership agreements issued when each partner was approved (whose signing made it a
partner) and one still waiting for the program's countersignature, contribution agreements
issued as projects were approved, and a renewed partnership text that asks partners to sign again —
so every state shows, and each demo signer has something waiting. Everything goes through the
services people use (``portal.agreements.services``), signatures included."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from portal.agreements import services
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    AgreementTemplate,
    SubjectType,
)
from portal.agreements.permissions import signers_of
from portal.auth.models import User
from portal.core.models import AnySession, utcnow
from portal.institutions.models import Institution
from portal.proposals.models import Proposal

#: Where the demo's signatures say they came from: an RFC 5737 documentation address.
DEMO_IP = "192.0.2.10"
DEMO_USER_AGENT = "demo"
#: Agreements signed on the first partnership text count this long after the second is published.
RECONSENT_DAYS = 90

PARTNERSHIP_V1 = """\
# Partnership agreement between {{ lab }} and {{ institution }}

Issued on {{ today }}.

## 1. The parties

This agreement is made between **{{ lab }}** (“the Lab”) and **{{ institution }}**
({{ country }}; ROR {{ ror_id }}) (“the Partner”).

## 2. Purpose

The Lab runs shared GPU clusters for open research on foundation models. By this agreement the
Partner joins the Lab's partner program: its researchers may propose projects to the Lab's calls,
be awarded GPU-hours, and use the Lab's open datasets on their terms.

## 3. What the Lab provides

- Calls for proposals open to the Partner's researchers, reviewed by peers without conflicts of
  interest.
- The GPU-hours awarded to approved projects, on the resources and for the period set out in each
  project's contribution agreement.
- Support from the Lab's research engineers in porting, scaling and releasing the work.

## 4. What the Partner undertakes

- To name at least one signing official, who endorses its researchers' proposals and signs
  agreements on its behalf, and to tell the Lab without delay when that person changes.
- To confirm who its researchers are, and to end a person's affiliation when they leave.
- To see that its researchers follow the Lab's acceptable-use policy and the licences of the data
  and models they use.

## 5. Open science

Work done on the Lab's resources is released openly: papers open access, code and model weights
under open licences, as each project commits to in its contribution agreement.

## 6. Personal data

Each party processes the personal data of the other's staff only to run the partnership (accounts,
signatures, correspondence) and keeps it no longer than that needs.

## 7. Term and ending

This agreement takes effect when both parties have signed it and runs until either party ends it
with three months' written notice. The Lab may suspend the partnership if the Partner breaches it;
projects already running keep their awarded hours unless the breach concerns them.

## 8. Signatures

Signed for {{ institution }} by its signing official, and for {{ lab }} by a program officer.
"""

PARTNERSHIP_V2 = PARTNERSHIP_V1.replace(
    """\
## 7. Term and ending""",
    """\
## 7. Research security

The Partner confirms that work proposed by its researchers is not subject to export-control or
sanctions rules that forbid running it on the Lab's clusters, and tells the Lab before a project's
subject comes under such rules. The Lab may pause a project's access while the question is settled.

## 8. Term and ending""",
).replace("## 8. Signatures", "## 9. Signatures")

PARTNERSHIP_V2_NOTE = (
    "Adds section 7, research security: partners confirm that proposed work is not subject to "
    "export-control or sanctions rules, and say so before it becomes so. Nothing else changes."
)

CONTRIBUTION_V1 = """\
# Project contribution agreement: {{ project }}

Issued on {{ today }} under the call “{{ call }}”.

## 1. The project

**{{ project }}**, led by {{ pi }} (principal investigator) at {{ institution }}, starts on
{{ start_date }} and runs for {{ duration_months }} months.

## 2. Compute awarded

{{ lab }} awards the project {{ total_hours }} GPU-hours in all: {{ hours }}. The hours can be used
once every party has signed this agreement, until the end of the project period; hours not used by
then lapse and return to the cluster's capacity.

## 3. Open outputs

The project team releases: {{ outputs }}. Each output is released under the licence named, no later
than six months after the end of the project. A release may be delayed once, by up to six months,
with the Lab's written agreement (for example while a paper is under review).

## 4. Responsibilities

- **The principal investigator** runs the project as proposed, keeps the team's membership up to
  date in the portal, and reports on the outputs when the project ends.
- **{{ institution }}** confirms that the project may be carried out there and that the team
  follows its research-ethics rules.
- **{{ lab }}** provides the hours awarded and the support of its research engineers, and
  publishes the project's title, team and outputs on its website.

## 5. Acknowledgement

Publications and releases acknowledge the Lab: “Computing resources were provided by {{ lab }}
through its open partner program.”

## 6. Signatures

Signed by the principal investigator, by a signing official for {{ institution }}, and
countersigned for {{ lab }} by a program officer.
"""

CONTRIBUTION_V2_DRAFT = CONTRIBUTION_V1.replace(
    """\
## 6. Signatures""",
    """\
## 6. Energy reporting

The Lab measures the energy used by the project's jobs and reports it to the team each quarter;
the team includes the total in the release notes of each output.

## 7. Signatures""",
)

DATA_USE_V1 = """\
# Data-use agreement: {{ dataset }}

Issued on {{ today }}.

## 1. Access granted

{{ researcher }} of {{ institution }} (“the Researcher”) is granted access to **{{ dataset }}**,
held by {{ lab }}, for this purpose only: {{ purpose }}. Access ends on {{ expires_on }}.

## 2. Conditions of use

- Use the data only for the purpose above; another purpose needs a new request.
- Never attempt to identify a person in the data, nor link it with other data to that end.
- Keep the data on the Lab's clusters; do not copy it elsewhere or share it with anyone, team
  members without access of their own included.
- Report any breach, or suspected breach, to the Lab's data steward within 72 hours.
- Delete every derived copy when access ends.

## 3. Publication

Results may be published provided they contain no records from the dataset and nothing from which
a person could be identified. Cite the dataset as its catalog entry asks.

## 4. Ending

Access starts once this agreement is fully signed. A data steward of the dataset may revoke it at
once if these conditions are broken; it ends when the Researcher leaves {{ institution }} or the
project it was granted for, and is suspended while {{ institution }} is suspended as a partner.

## 5. Signatures

Signed by the Researcher. Where the data provider requires it, a signing official then signs for
{{ institution }}, which undertakes to see these conditions kept. The data steward's approval is
recorded with the request.
"""


def load_templates(session: AnySession, officer: User) -> dict[AgreementKind, AgreementTemplate]:
    """The three templates, written and published by the program officer; partnership and
    contribution agreements are issued automatically (an institution or a project is approved).
    Called before any institution or proposal moves, so those issue for real."""
    made = {}
    for kind, title, description, body, auto in [
        (
            AgreementKind.PARTNERSHIP,
            "ATOM Lab partnership agreement",
            "Signed by every institution approved as a partner; it is a partner once both sides have signed.",
            PARTNERSHIP_V1,
            True,
        ),
        (
            AgreementKind.CONTRIBUTION,
            "Project contribution agreement",
            "Signed for each approved project before its GPU-hours can be used.",
            CONTRIBUTION_V1,
            True,
        ),
        (
            AgreementKind.DATA_USE,
            "Controlled-data use agreement",
            "Signed by each researcher granted access to a controlled dataset.",
            DATA_USE_V1,
            False,
        ),
    ]:
        template = services.create_template(
            session,
            actor=officer,
            kind=kind,
            title=title,
            description=description,
            body=body,
            auto_issue=auto,
        )
        draft = template.draft
        assert draft is not None
        services.publish_version(session, draft, actor=officer)
        made[kind] = template
    return made


def sign_as(session: AnySession, agreement: Agreement, signer: User) -> None:
    """``signer`` signs the agreement's slot whose turn it is, as the sign page would have them:
    their full name typed, the box ticked, the hash of the text they were shown."""
    theirs = [
        s
        for s in agreement.next_signatures
        if session.scalar(signers_of(s).where(User.id == signer.id)) is not None
    ]
    assert theirs, f"{signer.display_name} may not sign {agreement.title} now"
    slot = theirs[0]
    services.sign(
        session,
        slot,
        actor=signer,
        typed_name=signer.display_name,
        confirmed=True,
        shown_sha256=agreement.text_sha256,
        ip=DEMO_IP,
        user_agent=DEMO_USER_AGENT,
    )


def sign_in_turn(session: AnySession, agreement: Agreement, parties: int | None = None) -> None:
    """The next ``parties`` slots (all, by default) are signed in turn, each by the first person
    the signing rule lets sign it (``permissions.signers_of``): the named PI, the institution's
    signing official, the program officer."""
    for _ in range(parties if parties is not None else len(agreement.signatures)):
        if agreement.state != AgreementState.AWAITING:
            break
        signer = session.scalars(signers_of(agreement.next_signatures[0])).first()
        assert signer is not None, f"nobody may sign {agreement.next_signatures[0]!r}"
        sign_as(session, agreement, signer)


def partnership_of(session: AnySession, institution: Institution) -> Agreement:
    """The institution's newest partnership agreement being signed or in force."""
    agreement = services.standing(
        session, AgreementKind.PARTNERSHIP, SubjectType.INSTITUTION, institution.id
    )
    assert agreement is not None, f"{institution.name} has no partnership agreement"
    return agreement


def sign_partnership(session: AnySession, institution: Institution) -> None:
    """Once an institution is approved: the agreement its approval issued is signed by its signing
    official and countersigned by the program officer — the last signature makes it a partner."""
    sign_in_turn(session, partnership_of(session, institution))


def _contribution_of(session: AnySession, title: str) -> tuple[Proposal, Agreement]:
    proposal = session.scalars(select(Proposal).where(Proposal.title == title)).one()
    agreement = services.standing(
        session, AgreementKind.CONTRIBUTION, SubjectType.PROJECT, proposal.id
    )
    assert agreement is not None, f"“{title}” has no contribution agreement"
    return proposal, agreement


def _institution(session: AnySession, name: str) -> Institution:
    return session.scalars(select(Institution).where(Institution.name == name)).one()


def load_agreements(session: AnySession, people: dict[str, User]) -> None:
    """After the projects are approved: their contribution agreements at every stage, then the
    second partnership text, which asks every partner to sign again by a date."""
    officer, olivia = people["officer"], people["official"]

    # Contribution agreements, issued when each project was approved (demo_reviews).
    for title in (
        "Pilot: scaling laws for open data mixtures",
        "Pilot: open evaluation of multilingual reasoning",
    ):
        sign_in_turn(session, _contribution_of(session, title)[1])  # fully signed: hours usable
    # Kenji and Yuki have signed; the program officer's countersignature is awaited.
    sign_in_turn(
        session, _contribution_of(session, "Japanese legal-text models with open weights")[1], 2
    )
    # "Interpretability probes for open multilingual models" is left as issued: it waits on its
    # PI, Ada. Sam's project: Olivia declined the first agreement; program staff issued it again once
    # UNC Charlotte's research office had cleared it, Sam signed, and it waits on Olivia.
    sam_project, declined = _contribution_of(
        session, "Open speech recognition for lecture captions"
    )
    sign_in_turn(session, declined, 1)
    services.decline(
        session,
        declined,
        actor=olivia,
        reason=(
            "UNC Charlotte's research office has to clear the recordings of lectures with the "
            "students' union first; please issue it again once they have (expected this month)."
        ),
    )
    contribution = services.auto_template(session, AgreementKind.CONTRIBUTION)
    assert contribution is not None
    again = services.issue(
        session, contribution, services.project_subject(sam_project), actor=officer
    )
    sign_in_turn(session, again, 1)

    # The contribution template's next text is being written.
    services.save_draft(
        session,
        contribution,
        actor=officer,
        body=CONTRIBUTION_V2_DRAFT,
        change_note="Adds section 6, energy reporting. Draft: to be discussed with the partners.",
    )

    # The second partnership text asks every partner to sign again within RECONSENT_DAYS: their
    # agreements count until then, and each gets a re-issued agreement to sign.
    partnership = services.auto_template(session, AgreementKind.PARTNERSHIP)
    assert partnership is not None
    v2 = services.save_draft(
        session,
        partnership,
        actor=officer,
        body=PARTNERSHIP_V2,
        change_note=PARTNERSHIP_V2_NOTE,
        reconsent_by=utcnow().date() + dt.timedelta(days=RECONSENT_DAYS),
    )
    services.publish_version(session, v2, actor=officer)
    # Laikipia's agreement, issued on its approval, was still unsigned: withdrawn, and issued on
    # the new text; Wanjiru has signed that, and it waits for the program's countersignature (whose
    # signature makes Laikipia a partner: try it as ``officer``).
    laikipia = _institution(session, "Laikipia University")
    services.withdraw(
        session,
        partnership_of(session, laikipia),
        actor=officer,
        reason="Version 2 of the partnership agreement was published before anyone signed this "
        "one; it is issued again on version 2.",
    )
    services.issue(session, partnership, services.institution_subject(laikipia), actor=officer)
    sign_in_turn(session, partnership_of(session, laikipia), 1)
    # Keio has signed again (its first agreement is superseded); UNC Charlotte's official has, the
    # program officer's countersignature is awaited; TUM's official has not yet. The
    # Westfjords' official will not: he leaves, and the university is suspended (``demo.load``);
    # it can sign again only to be reinstated.
    sign_in_turn(session, partnership_of(session, _institution(session, "Keio University")))
    sign_in_turn(
        session,
        partnership_of(session, _institution(session, "University of North Carolina at Charlotte")),
        1,
    )
