"""Forms of scoring and deciding: a reviewer's review (a score and a comment per rubric criterion,
a comment to the applicants and one to staff), and a decider's decision on a proposal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from portal.core.workflow import MAX_REASON
from portal.proposals.models import Proposal, RubricCriterion
from portal.reviews.models import Review


def _score_field(c: RubricCriterion) -> SelectField:
    # A select of exactly 1 … scale_max: anything else posted is "not a valid choice" (a form error).
    return SelectField(
        f"Score: {c.name}",
        choices=[SelectChoice("", "Not scored yet")]
        + [SelectChoice(str(n), str(n)) for n in range(1, c.scale_max + 1)],
        validators=[Optional()],
        description=f"1 (weakest) to {c.scale_max} (strongest); weight {c.weight}. "
        + (c.description or ""),
    )


class ReviewForm(FlaskForm):  # type: ignore[misc]  # FlaskForm is untyped
    """A review: per criterion a score (``score_<id>``) and a comment (``comment_<id>``), then the
    comment to the applicants and the confidential comment to staff. Build it with ``for_call``."""

    to_applicant = TextAreaField(
        "Comments to the applicants",
        validators=[Optional(), Length(max=20000)],
        description="The applicants read this after the decision (without your name in a "
        "single-blind call).",
    )
    confidential = TextAreaField(
        "Confidential comments to program staff",
        validators=[Optional(), Length(max=20000)],
        description="Only those who decide read this; never the applicants.",
    )

    criteria: Sequence[RubricCriterion] = ()

    @classmethod
    def for_call(cls, criteria: Sequence[RubricCriterion], review: Review | None) -> ReviewForm:
        """The form for a call's ``criteria``, filled from ``review`` (on GET)."""

        class Bound(cls):  # type: ignore[valid-type,misc]
            pass

        for c in criteria:
            setattr(Bound, f"score_{c.id}", _score_field(c))
            setattr(
                Bound,
                f"comment_{c.id}",
                TextAreaField(f"Comment: {c.name}", validators=[Optional(), Length(max=5000)]),
            )
        data: dict[str, Any] = {}
        if review is not None:
            for c in criteria:
                score = review.scores.get(str(c.id))
                data[f"score_{c.id}"] = "" if score is None else str(score)
                data[f"comment_{c.id}"] = review.comments.get(str(c.id), "")
            data["to_applicant"] = review.to_applicant
            data["confidential"] = review.confidential
        form: ReviewForm = Bound(data=data)
        form.criteria = tuple(criteria)
        return form

    def rows(self) -> list[tuple[RubricCriterion, Any, Any]]:
        """(criterion, score field, comment field) per criterion, for the template."""
        return [(c, self[f"score_{c.id}"], self[f"comment_{c.id}"]) for c in self.criteria]

    def has_content(self) -> bool:
        """Whether the POST carried the review's fields (not only its CSRF token)."""
        return bool(self.to_applicant.raw_data)

    def details(self) -> dict[str, Any]:
        """Keyword arguments of ``services.save_review``."""
        scores: dict[int, int | None] = {}
        comments: dict[int, str] = {}
        for c, score, comment in self.rows():
            scores[c.id] = int(score.data) if score.data else None
            comments[c.id] = comment.data or ""
        return {
            "scores": scores,
            "comments": comments,
            "to_applicant": self.to_applicant.data or "",
            "confidential": self.confidential.data or "",
        }


class DecisionForm(FlaskForm):  # type: ignore[misc]  # FlaskForm is untyped
    """A decision on a proposal: ``approve`` with GPU-hours per requested resource
    (``award_<call_resource_id>``, at most what was asked for), or ``revise`` / ``decline`` with a
    reason the applicants read."""

    action = HiddenField(validators=[DataRequired()])
    reason = TextAreaField(
        "Reason (the applicants read it)", validators=[Optional(), Length(max=MAX_REASON)]
    )

    proposal: Proposal

    @classmethod
    def for_proposal(cls, proposal: Proposal) -> DecisionForm:
        """The form for ``proposal``: one award field per request, defaulting to the hours asked."""

        class Bound(cls):  # type: ignore[valid-type,misc]
            pass

        for r in proposal.requests:
            setattr(
                Bound,
                f"award_{r.call_resource_id}",
                IntegerField(
                    f"{r.call_resource.resource.name}: GPU-hours awarded",
                    default=r.hours,
                    validators=[
                        Optional(),
                        NumberRange(
                            0,
                            r.hours,
                            message=f"Award 0 to {r.hours:,} GPU-hours (what was asked for).",
                        ),
                    ],
                    description=f"Requested: {r.hours:,}",
                ),
            )
        form: DecisionForm = Bound()
        form.proposal = proposal
        return form

    def award_fields(self) -> list[Any]:
        return [self[f"award_{r.call_resource_id}"] for r in self.proposal.requests]

    def awards(self) -> dict[int, int]:
        """Call resource id → GPU-hours awarded (zero or blank: nothing on that resource)."""
        return {
            r.call_resource_id: int(self[f"award_{r.call_resource_id}"].data or 0)
            for r in self.proposal.requests
        }
