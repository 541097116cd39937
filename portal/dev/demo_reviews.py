"""Demo peer review: reviewers with expertise and a declared conflict, proposals in review with some
reviews in, one declined, and projects approved — through the same services people use."""

from __future__ import annotations

from sqlalchemy import select

from portal.auth.models import User
from portal.core.models import AnySession
from portal.institutions.models import Institution
from portal.proposals import services as proposals
from portal.proposals.models import Proposal, ProposalState
from portal.reviews import services


def _scores(proposal: Proposal, points: int) -> dict[int, int | None]:
    return {c.id: min(points, c.scale_max) for c in proposal.call.criteria}


def _review(
    session: AnySession, proposal: Proposal, reviewer: User, staff: User, *, points: int | None
) -> None:
    """Assign ``reviewer``, who accepts; with ``points``, they also write and submit a review."""
    assignment = services.assign(session, proposal, reviewer, actor=staff)
    services.answer(session, assignment, "accept", actor=reviewer)
    review = services.review_of(session, assignment, actor=reviewer)
    services.save_review(
        session,
        review,
        actor=reviewer,
        scores=_scores(proposal, points or 3) if points else {},
        comments={c.id: "Clear and well argued." for c in proposal.call.criteria},
        to_applicant="A strong plan; please say more about how the data mixture is chosen.",
        confidential="Fund it; the team delivered on the pilot.",
    )
    if points:
        services.submit_review(session, review, actor=reviewer)


def load_reviews(session: AnySession, staff: User, people: dict[str, User]) -> None:
    rafael, ines = people["reviewer"], people["reviewer2"]
    services.save_profile(
        session,
        rafael,
        actor=rafael,
        expertise=["large language models", "multilingual NLP", "evaluation and benchmarks"],
        load_limit=4,
    )
    services.save_profile(
        session,
        ines,
        actor=ines,
        expertise=["computer vision", "large language models", "HPC and systems", "robustness"],
        load_limit=6,
    )
    keio = session.scalars(select(Institution).where(Institution.name == "Keio University")).one()
    services.declare_conflict(
        session,
        rafael,
        actor=rafael,
        institution_id=keio.id,
        reason="A former postdoc of mine leads its lab.",
    )

    def proposal(title: str) -> Proposal:
        return session.scalars(select(Proposal).where(Proposal.title == title)).one()

    # Kenji's proposal: in review, one of two reviews in (Rafael declared a conflict with Keio).
    _review(session, proposal("Open vision-language models for Japanese"), ines, staff, points=4)
    # Rafael's own proposal: Ines has accepted and is still writing.
    _review(
        session,
        proposal("Evaluating open code models on scientific software"),
        ines,
        staff,
        points=None,
    )
    # Reviewed and declined: the plan trains on a commercial model's answers, whose terms forbid
    # releasing what is trained on them.
    distil = proposal("Distilling a commercial chat model into a small one")
    _review(session, distil, ines, staff, points=2)
    proposals.decide_proposal(
        session,
        distil,
        "decline",
        actor=staff,
        reason="The plan trains on a commercial model's answers, whose terms of use forbid "
        "releasing a model trained on them: the weights could not be open. A plan built on "
        "openly licensed data would be welcome in the next call.",
    )
    # Reviewed and approved: active projects with their GPU-hours. Approving issues each one's
    # contribution agreement (the template exists already: demo_agreements.load_templates), which
    # demo_agreements then takes through its signatures, and allocates the hours awarded (out of
    # the call's budget), pending until that agreement is fully signed.
    for title, reviewer, reason in [
        ("Pilot: scaling laws for open data mixtures", ines, "Ranked first by the panel."),
        ("Pilot: open evaluation of multilingual reasoning", rafael, "Ranked second by the panel."),
        ("Japanese legal-text models with open weights", ines, "Strong plan, strong team."),
        ("Interpretability probes for open multilingual models", ines, "A small, sound project."),
        ("Open speech recognition for lecture captions", ines, "Useful and well scoped."),
    ]:
        project = proposal(title)
        approve(session, project, reviewer, staff, reason=reason)


def approve(
    session: AnySession,
    project: Proposal,
    reviewer: User,
    staff: User,
    *,
    reason: str,
    awards: dict[int, int] | None = None,
) -> None:
    """``reviewer`` reviews ``project`` (top marks) and program staff approve it, awarding
    ``awards`` (GPU-hours per call resource; three quarters of each request by default). The
    approval issues its contribution agreement and allocates its hours (pending until that
    agreement is fully signed)."""
    _review(session, project, reviewer, staff, points=5)
    proposals.decide_proposal(
        session,
        project,
        "approve",
        actor=staff,
        reason=reason,
        awards=awards or {r.call_resource_id: r.hours * 3 // 4 for r in project.requests},
    )
    assert project.state == ProposalState.ACTIVE
