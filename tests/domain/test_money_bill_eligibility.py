import pytest

from domain.bill import Entry, EntryKind, OpenBill, allocate, totals
from domain.eligibility import EligibilityFacts, Rule, Thresholds, decide
from domain.money import MAX_AMOUNT_FEN, balance_band, fen_from_yuan, format_fen, is_valid_amount, yuan


@pytest.mark.parametrize(
    ("fen", "ok"),
    [
        (1, True),
        (MAX_AMOUNT_FEN, True),
        (0, False),
        (-1, False),
        (MAX_AMOUNT_FEN + 1, False),
        (1.0, False),
        (True, False),
        ("1", False),
    ],
)
def test_valid_amounts(fen: object, ok: bool) -> None:
    assert is_valid_amount(fen) is ok


@pytest.mark.parametrize(
    ("fen", "text"), [(0, "¥0.00"), (5, "¥0.05"), (12345, "¥123.45"), (-50, "-¥0.50"), (123456789, "¥1,234,567.89")]
)
def test_format(fen: int, text: str) -> None:
    assert format_fen(fen) == text


def test_totals_from_entries() -> None:
    t = totals(
        [
            Entry(kind=EntryKind.charge, amount_fen=1000),
            Entry(kind=EntryKind.charge, amount_fen=500),
            Entry(kind=EntryKind.reversal, amount_fen=500),
            Entry(kind=EntryKind.payment, amount_fen=700),
            Entry(kind=EntryKind.refund, amount_fen=100),
        ]
    )
    assert (t.total_fen, t.paid_fen, t.balance_fen) == (1000, 600, 400)
    with pytest.raises(ValueError):
        totals([Entry(kind=EntryKind.charge, amount_fen=0)])


def test_allocate_oldest_first() -> None:
    bills = [
        OpenBill(visit_id="a", balance_fen=300),
        OpenBill(visit_id="b", balance_fen=0),
        OpenBill(visit_id="c", balance_fen=500),
    ]
    assert allocate(600, bills) == [("a", 300), ("c", 300)]
    assert allocate(1000, bills) == [("a", 300), ("c", 500)]
    assert allocate(100, bills) == [("a", 100)]


@pytest.mark.parametrize(
    ("facts", "eligible", "rule"),
    [
        (EligibilityFacts(insured_locally=True), True, Rule.local_insurance),
        (EligibilityFacts(insured_locally=False), False, None),
        (EligibilityFacts(insured_locally=False, bank_score=109), False, None),
        (EligibilityFacts(insured_locally=False, bank_score=110), True, Rule.bank_score),
        (EligibilityFacts(insured_locally=False, sesame_score=699), False, None),
        (EligibilityFacts(insured_locally=False, sesame_score=700), True, Rule.sesame_score),
        (EligibilityFacts(insured_locally=False, bank_score=109, sesame_score=699), False, None),
        (EligibilityFacts(insured_locally=False, bank_score=200, sesame_score=800), True, Rule.bank_score),
    ],
)
def test_eligibility_boundaries(facts: EligibilityFacts, eligible: bool, rule: Rule | None) -> None:
    decision = decide(facts)
    assert decision.eligible is eligible
    assert decision.passed_rule == rule
    assert len(decision.reasons()) == 3


def test_eligibility_thresholds_are_hospital_policy() -> None:
    facts = EligibilityFacts(insured_locally=False, bank_score=120)
    assert decide(facts, Thresholds(bank_score=121)).eligible is False
    assert decide(facts, Thresholds(bank_score=120)).eligible is True


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("12.30", 1230),
        ("12.3", 1230),
        ("12", 1200),
        ("0.01", 1),
        ("0", 0),
        ("12.345", None),
        ("-1.00", None),
        ("1e3", None),
        (" 1.00", None),
        ("NaN", None),
        ("012.00", None),
        ("1.", None),
        ("", None),
    ],
)
def test_yuan_strings_convert_exactly(text: str, fen: int | None) -> None:
    assert fen_from_yuan(text) == fen
    if fen:
        assert fen_from_yuan(yuan(fen)) == fen


@pytest.mark.parametrize(
    ("fen", "band"),
    [(-500, "0"), (0, "0"), (1, "<100"), (9_999, "<100"), (10_000, "100-500"), (49_999, "100-500"), (50_000, "500+")],
)
def test_a_balance_shows_in_clear_only_as_its_band(fen: int, band: str) -> None:
    assert balance_band(fen) == band
