"""Who may enrol in post-pay: insured locally, OR a bank credit score, OR a Sesame score
over the hospital's thresholds. The decision says which rule passed and why others did not."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Rule(StrEnum):
    local_insurance = "local_insurance"
    bank_score = "bank_score"
    sesame_score = "sesame_score"


class EnrolmentRefusal(StrEnum):
    """Why post-pay refuses a patient: to enrol, to leave, or to open a visit (the API answers
    each as its problem `code`)."""

    not_eligible = "not_eligible"  # no rule of `decide` passed
    already_enrolled = "already_enrolled"
    agreement_outdated = "agreement_outdated"  # agreed to another version of the service agreement
    not_enrolled = "not_enrolled"  # leaving, or a visit, without an active enrolment
    outstanding_balance = "outstanding_balance"  # leaving while a visit is unpaid or still in progress
    service_suspended = "service_suspended"  # a new visit while the patient is in arrears or defaulted


@dataclass(frozen=True, kw_only=True)
class EligibilityFacts:
    insured_locally: bool
    bank_score: int | None = None
    sesame_score: int | None = None


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    bank_score: int = 110
    sesame_score: int = 700


@dataclass(frozen=True, kw_only=True)
class RuleOutcome:
    rule: Rule
    passed: bool
    reason: str


@dataclass(frozen=True, kw_only=True)
class EligibilityDecision:
    eligible: bool
    passed_rule: Rule | None
    outcomes: tuple[RuleOutcome, ...] = field(default_factory=tuple)

    def reasons(self) -> list[str]:
        return [o.reason for o in self.outcomes]


def _score_outcome(rule: Rule, label: str, score: int | None, threshold: int) -> RuleOutcome:
    if score is None:
        return RuleOutcome(rule=rule, passed=False, reason=f"no {label} on record")
    if score >= threshold:
        return RuleOutcome(rule=rule, passed=True, reason=f"{label} {score} >= {threshold}")
    return RuleOutcome(rule=rule, passed=False, reason=f"{label} {score} is below {threshold}")


def decide(facts: EligibilityFacts, thresholds: Thresholds = Thresholds()) -> EligibilityDecision:
    outcomes = (
        RuleOutcome(
            rule=Rule.local_insurance,
            passed=facts.insured_locally,
            reason="enrolled in the local medical insurance"
            if facts.insured_locally
            else "not enrolled in the local medical insurance",
        ),
        _score_outcome(Rule.bank_score, "bank credit score", facts.bank_score, thresholds.bank_score),
        _score_outcome(Rule.sesame_score, "Sesame credit score", facts.sesame_score, thresholds.sesame_score),
    )
    passed = next((o.rule for o in outcomes if o.passed), None)
    return EligibilityDecision(eligible=passed is not None, passed_rule=passed, outcomes=outcomes)
