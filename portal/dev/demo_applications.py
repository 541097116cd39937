"""Demo applications: universities that applied through the portal to become partners, one in each
state of the onboarding workflow — made through the services the application pages use
(``portal.institutions.onboarding``): the application form, the invitation each proposed signing
official gets by mail (accepted with the link in it), and the program officer's decisions.

- Laikipia University: approved; its partnership agreement went out on approval, and Wanjiru
  (``laikipia-official``, who applied and named herself its signing official) has signed it — it
  waits for the program's countersignature, whose signature makes Laikipia a partner
  (``demo_agreements`` re-issues it on the partnership text's version 2 first);
- Nigerian University of Technology and Management: just received from Chinedu (``applicant``),
  its domain pending, its proposed signing official invited and not answered yet;
- University of the Witwatersrand: the dean Thandiwe (``wits-applicant``) proposed declined to
  be its signing official, and the program sent it back to her with a note; she edits it and
  sends it again;
- Delft University of Technology: under review, its signing official has accepted;
- Universidade Federal do Ceará: sent back once, sent again, reviewed and declined (its pending
  domain released, the open invitation cancelled);
- Universidad Católica Boliviana San Pablo: withdrawn at the university's request (the invitation
  to its applicant, who proposed himself, cancelled).

Names, countries, websites and e-mail domains are the universities' records in the shipped ROR
subset; identity-provider entity ids and URLs are made-up ``example.org`` ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portal.auth.models import User
from portal.core.models import AnySession
from portal.institutions import onboarding
from portal.institutions import services as institutions
from portal.institutions.models import Institution
from portal.institutions.ror import RorRecord, by_id
from portal.notifications.models import OutboxMessage


def ror_record(ror_id: str) -> RorRecord:
    """The organisation's record in the ROR subset the portal ships."""
    record = by_id(ror_id)
    assert record is not None, f"{ror_id} is not in the shipped ROR subset"
    return record


@dataclass(frozen=True)
class DemoApplication:
    key: str
    ror: str
    #: The demo person (``demo.PEOPLE`` or ``OTHER_PEOPLE``) who applied.
    applicant: str
    statement: str
    technical_contact: tuple[str, str]
    idp_entity_id: str | None
    #: The demo people proposed as signing officials (invited at their e-mail address) …
    officials: tuple[str, ...]
    #: … those who accepted …
    accepted: tuple[str, ...]
    #: What happened next: (action, reason); ``resubmit`` is the applicant's, the rest the
    #: program officer's (``withdraw`` at the university's request).
    steps: tuple[tuple[str, str | None], ...]
    #: Someone proposed as signing official who is no demo person (the invitation stays open).
    invited_email: str | None = None
    #: … and those who declined.
    declined: tuple[str, ...] = ()


APPLICATIONS = [
    DemoApplication(
        key="laikipia",
        ror="https://ror.org/02y5m7j45",
        applicant="laikipia-official",
        statement=(
            "Laikipia University's School of Science and Applied Technology trains data "
            "scientists for Kenya's agricultural and pastoral counties. We would propose projects "
            "on open speech and text models for Kikuyu, Samburu and Maa, with the county "
            "extension services as partners, and release models and evaluation sets openly."
        ),
        technical_contact=("Peter Kiprono", "p.kiprono@laikipia.ac.ke"),
        idp_entity_id="https://laikipia-idp.example.org/idp/shibboleth",
        officials=("laikipia-official",),
        accepted=("laikipia-official",),
        steps=(("start_review", None), ("approve", None)),
    ),
    DemoApplication(
        key="nutm",
        ror="https://ror.org/01zvb6k44",
        applicant="applicant",
        statement=(
            "NUTM's computer science faculty works on language technology for Yoruba, Igbo and "
            "Hausa. We want to train and release open speech recognition and translation models "
            "for them, with our students as members of each project."
        ),
        technical_contact=("Ngozi Adeyemi", "n.adeyemi@nutm.edu.ng"),
        idp_entity_id="https://nutm-idp.example.org/idp/shibboleth",
        officials=(),
        accepted=(),
        steps=(),
        invited_email="a.bello@nutm.edu.ng",
    ),
    DemoApplication(
        key="wits",
        ror="https://ror.org/03rp50x72",
        applicant="wits-applicant",
        statement=(
            "Wits' Machine Intelligence and Neural Discovery Institute would use the program's "
            "GPU-hours for open multilingual models for South Africa's official languages."
        ),
        technical_contact=("Thandiwe Nkosi", "t.nkosi@wits.ac.za"),
        idp_entity_id=None,
        officials=("wits-dean",),
        accepted=(),
        declined=("wits-dean",),
        steps=(
            (
                "request_changes",
                "Lerato Mokoena declined to be the signing official: please propose the person "
                "who signs research agreements for Wits (usually in the research office), and "
                "give your identity provider's entity id so that your researchers can log in.",
            ),
        ),
    ),
    DemoApplication(
        key="delft",
        ror="https://ror.org/02e2c7k09",
        applicant="delft-applicant",
        statement=(
            "TU Delft's AI labs would propose projects on open models for engineering design and "
            "on the energy efficiency of training, releasing code, weights and measurements."
        ),
        technical_contact=("Pieter Jansen", "p.jansen@tudelft.nl"),
        idp_entity_id="https://tudelft-idp.example.org/idp/shibboleth",
        officials=("delft-official",),
        accepted=("delft-official",),
        steps=(("start_review", None),),
    ),
    DemoApplication(
        key="ufc",
        ror="https://ror.org/03srtnf24",
        applicant="ufc-applicant",
        statement=(
            "A start-up incubated at the university would fine-tune models for its customers' "
            "support chat; the models would stay private."
        ),
        technical_contact=("Rafaela Sousa", "rafaela.sousa@ufc.br"),
        idp_entity_id=None,
        officials=(),
        accepted=(),
        steps=(
            (
                "request_changes",
                "Please describe the research your university would do, and what it would release.",
            ),
            ("resubmit", None),
            ("start_review", None),
            (
                "decline",
                "The work described is a company's product development, and its models would not "
                "be released: the program supports open research only. The university is welcome "
                "to apply again for an open research project.",
            ),
        ),
        invited_email="p.lima@ufc.br",
    ),
    DemoApplication(
        key="ucb",
        ror="https://ror.org/036b2ns30",
        applicant="ucb-applicant",
        statement=(
            "Our engineering faculty would study open models for Quechua and Aymara, with the "
            "communities whose speech is recorded."
        ),
        technical_contact=("Mateo Quispe", "m.quispe@ucb.edu.bo"),
        idp_entity_id=None,
        officials=("ucb-applicant",),
        accepted=(),
        steps=(
            (
                "withdraw",
                "At the university's request: it will join through its national research "
                "consortium instead.",
            ),
        ),
    ),
]


def invitation_token(session: AnySession, email: str) -> str:
    """The one-time token in the newest invitation mail to ``email`` (as its reader clicks it)."""
    mail = session.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.template == onboarding_invitation_template(),
            OutboxMessage.to_addr == email,
        )
        .order_by(OutboxMessage.id.desc())
    ).first()
    assert mail is not None, f"no invitation went to {email}"
    return str(mail.context["accept_url"]).rsplit("/", 1)[1]


def onboarding_invitation_template() -> str:
    from portal.institutions.emails import OFFICIAL_INVITED

    return OFFICIAL_INVITED.key


def load_applications(session: AnySession, people: dict[str, User]) -> dict[str, Institution]:
    """Each demo application, applied for and decided as ``APPLICATIONS`` says; returns them by
    key. Runs after the agreement templates exist (approval issues the partnership agreement)."""
    officer = people["officer"]
    made: dict[str, Institution] = {}
    for a in APPLICATIONS:
        record = ror_record(a.ror)
        applicant = people[a.applicant]
        officials = [people[o].email or "" for o in a.officials]
        if a.invited_email:
            officials.append(a.invited_email)
        institution = onboarding.apply(
            session,
            actor=applicant,
            name=record.name,
            ror_id=a.ror,
            country=record.country_code,
            website=record.website,
            domains=list(record.domains),
            statement=a.statement,
            technical_contact_name=a.technical_contact[0],
            technical_contact_email=a.technical_contact[1],
            idp_entity_id=a.idp_entity_id,
            officials=officials,
        )
        for login in a.accepted:
            person = people[login]
            onboarding.accept_invitation(
                session, invitation_token(session, person.email or ""), actor=person
            )
        for login in a.declined:
            person = people[login]
            onboarding.decline_invitation(
                session, invitation_token(session, person.email or ""), actor=person
            )
        for action, reason in a.steps:
            if action == "resubmit":
                onboarding.resubmit(session, institution, actor=applicant)
            elif action == "withdraw":
                institutions.transition(session, institution, action, actor=officer, reason=reason)
            else:
                onboarding.decide(session, institution, action, actor=officer, reason=reason)
        made[a.key] = institution
    return made
