"""A lab finding the officer was paged for no longer stands (the result taken back, corrected, moved to another
term, or no worse than a baseline that came later): safety says so (`lab.toxicity_withdrawn`), numbered with the
term's lab signals, with the grade that still stands if one does. Before, the officer's review stayed open and
escalated for a result the site had taken back."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from services.safety.lab_revision import same_quantity
from shared.events import EnvelopeBase, LabData, LabResulted
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, dose, enrol, lab, of_type, status, types

DAY1 = date(2026, 3, 2)
NEUT = "Neutrophil count decreased"


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    d = Driver(engine, protocol)
    d.apply_all([enrol("A-1", "A", DAY1), dose("A-1", datetime(2026, 3, 2, 10, tzinfo=UTC))])
    return d


def neut(result_id: str, value: str, day: int, *, baseline: bool = False, sender: str | None = None) -> LabResulted:
    at = datetime(2026, 3, day, 8, tzinfo=UTC)
    envelope = lab("A-1", result_id=result_id, test="NEUT", value=value, lln="2.0", collected_at=at, baseline=baseline)
    return envelope if sender is None else envelope.model_copy(update={"id": f"{envelope.id}-{sender}"})


def potassium(result_id: str, value: str, *, sender: str | None = None) -> LabResulted:
    at = datetime(2026, 3, 6, 8, tzinfo=UTC)
    data = LabData(
        result_id=result_id,
        test="K",
        value=value,  # pydantic parses the text exactly
        unit="mmol/L",
        lln=Decimal("3.5"),
        uln=Decimal("5.1"),
        collected_at=at,
    )
    envelope = lab("A-1", result_id=result_id, test="K", value=value, collected_at=at, unit="mmol/L")
    envelope = envelope.model_copy(update={"data": data})
    return envelope if sender is None else envelope.model_copy(update={"id": f"{envelope.id}-{sender}"})


def alt(result_id: str, value: str, *, day: int, baseline: bool = False) -> LabResulted:
    at = datetime(2026, 3, day, 8, tzinfo=UTC)
    envelope = lab("A-1", result_id=result_id, test="ALT", value=value, collected_at=at, unit="U/L", baseline=baseline)
    data = envelope.data.model_copy(update={"lln": Decimal("7"), "uln": Decimal("40")})
    return envelope.model_copy(update={"data": data})


def lab_findings(signals: list[EnvelopeBase]) -> list[str]:
    """The lab finding signals raised (a page or a withdrawal), by type."""
    return [kind for kind in types(signals) if kind in ("lab.toxicity", "lab.toxicity_withdrawn")]


def withdrawn(signals: list[EnvelopeBase]) -> Any:
    [signal] = of_type(signals, "lab.toxicity_withdrawn")
    return signal


def test_a_paged_result_entered_in_error_withdraws_its_finding(driver: Driver) -> None:
    [page] = of_type(driver.apply(neut("N-1", "0.3", 6)), "lab.toxicity")
    retraction = status("A-1", "lab", "N-1")
    signal = withdrawn(driver.apply(retraction))
    assert (signal.data.term, signal.data.withdrawn_grade, signal.data.standing_grade) == (NEUT, 4, None)
    assert signal.data.why == "result N-1 marked entered in error by the site"
    assert signal.data.source_event_id == retraction.id
    assert signal.data.sequence == page.data.sequence, "it carries the number of the finding it withdraws"


def test_taking_back_the_worse_of_two_paged_results_says_the_lower_grade_stands(driver: Driver) -> None:
    driver.apply(neut("N-1", "0.8", 6))  # grade 3
    driver.apply(neut("N-2", "0.3", 7))  # grade 4
    signal = withdrawn(driver.apply(status("A-1", "lab", "N-2", "deleted")))
    assert (signal.data.withdrawn_grade, signal.data.standing_grade, signal.data.standing_result_id) == (4, 3, "N-1")
    assert of_type(driver.apply(neut("N-3", "0.9", 8)), "lab.toxicity") == [], "grade 3 was paged already"


def test_a_correction_to_a_normal_value_withdraws_and_the_next_finding_pages(driver: Driver) -> None:
    driver.apply(neut("N-1", "0.3", 6))
    signal = withdrawn(driver.apply(neut("N-1", "3.0", 6, sender="corrected")))
    assert signal.data.why == "result N-1 corrected by the site: 0.3 10^9/L -> 3.0 10^9/L"
    assert "lab.toxicity" in types(driver.apply(neut("N-2", "0.4", 9)))


def test_a_correction_that_moves_a_result_to_the_other_term_withdraws_the_first(driver: Driver) -> None:
    """Hypokalaemia grade 4 (2.4 mmol/L) corrected to 6.5: hyperkalaemia grade 3 pages, hypokalaemia is withdrawn."""
    [low] = of_type(driver.apply(potassium("K-1", "2.4")), "lab.toxicity")
    assert (low.data.term, low.data.grade) == ("Hypokalemia", 4)
    signals = driver.apply(potassium("K-1", "6.5", sender="corrected"))
    signal = withdrawn(signals)
    assert (signal.data.term, signal.data.withdrawn_grade, signal.data.standing_grade) == ("Hypokalemia", 4, None)
    [high] = of_type(signals, "lab.toxicity")
    assert (high.data.term, high.data.grade) == ("Hyperkalemia", 3)


def test_a_baseline_received_later_that_regrades_the_result_below_the_threshold_withdraws_it(driver: Driver) -> None:
    """ALT 260 U/L against a normal baseline is grade 3 (6.5 x ULN); the abnormal baseline (100) the site enters
    afterwards makes it 2.6 x baseline: grade 1 (CTCAE v5.0), no longer a finding."""
    [page] = of_type(driver.apply(alt("ALT-1", "260", day=6)), "lab.toxicity")
    assert page.data.grade == 3
    signal = withdrawn(driver.apply(alt("ALT-0", "100", day=1, baseline=True)))
    assert (signal.data.term, signal.data.withdrawn_grade, signal.data.standing_grade) == (
        "Alanine aminotransferase increased",
        3,
        None,
    )
    assert signal.data.why == "graded again against the baseline result ALT-0, received after it"


def test_a_result_taken_back_before_it_was_ever_signalled_withdraws_nothing(driver: Driver) -> None:
    driver.apply(status("A-1", "lab", "N-1"))
    assert driver.apply(neut("N-1", "0.3", 6)) == []
    assert of_type(driver.apply(status("A-1", "lab", "N-1", "deleted")), "lab.toxicity_withdrawn") == []


def test_a_restored_result_pages_again_after_its_withdrawal(driver: Driver) -> None:
    driver.apply(neut("N-1", "0.3", 6))
    withdrawn(driver.apply(status("A-1", "lab", "N-1")))
    [page] = of_type(driver.apply(status("A-1", "lab", "N-1", "restored")), "lab.toxicity")
    assert (page.data.grade, page.data.sequence) == (4, 2)


def test_the_same_retraction_re_sent_withdraws_once(driver: Driver) -> None:
    driver.apply(neut("N-1", "0.3", 6))
    retraction = status("A-1", "lab", "N-1")
    withdrawn(driver.apply(retraction))
    again = retraction.model_copy(update={"id": f"{retraction.id}-again", "receivedat": retraction.receivedat})
    assert of_type(driver.apply(again), "lab.toxicity_withdrawn") == []


def test_taking_back_the_paged_result_while_another_of_its_grade_stands_names_the_one_that_stands(
    driver: Driver,
) -> None:
    """N-1 (grade 4) pages; N-2 (grade 4, not news) follows. N-1 is taken back: grade 4 stands by N-2, which the
    officer must now see (its id and value), the finding still numbered as the one that paged."""
    [page] = of_type(driver.apply(neut("N-1", "0.3", 6)), "lab.toxicity")
    assert of_type(driver.apply(neut("N-2", "0.4", 7)), "lab.toxicity") == []
    signal = withdrawn(driver.apply(status("A-1", "lab", "N-1")))
    data = signal.data
    assert (data.withdrawn_grade, data.standing_grade, data.standing_result_id) == (4, 4, "N-2")
    assert data.withdrawn_result_id == "N-1" and data.sequence == page.data.sequence
    assert data.standing_result is not None and (data.standing_result.value, data.standing_result.unit) == (
        "0.4",
        "10^9/L",
    )
    assert of_type(driver.apply(neut("N-3", "0.2", 8)), "lab.toxicity") == [], "grade 4 is still the one signalled"


def test_correcting_the_paged_result_below_its_grade_names_the_result_of_that_grade_that_stands(
    driver: Driver,
) -> None:
    driver.apply(neut("N-1", "0.3", 6))
    driver.apply(neut("N-2", "0.4", 7))
    signal = withdrawn(driver.apply(neut("N-1", "0.8", 6, sender="corrected")))
    data = signal.data
    assert (data.withdrawn_grade, data.standing_grade, data.standing_result_id, data.withdrawn_result_id) == (
        4,
        4,
        "N-2",
        "N-1",
    )
    assert data.why == "result N-1 corrected by the site: 0.3 10^9/L -> 0.8 10^9/L"


def test_taking_back_a_result_that_never_paged_at_the_grade_shown_names_nothing(driver: Driver) -> None:
    """N-1 grade 3 then N-2 grade 4 paged; N-3 grade 3 follows. Taking back N-3 or N-1 leaves grade 4 (N-2) shown."""
    driver.apply_all([neut("N-1", "0.8", 6), neut("N-2", "0.3", 7), neut("N-3", "0.9", 8)])
    assert of_type(driver.apply(status("A-1", "lab", "N-3")), "lab.toxicity_withdrawn") == []
    assert of_type(driver.apply(status("A-1", "lab", "N-1")), "lab.toxicity_withdrawn") == []


def test_a_lower_grade_that_stands_comes_with_its_value(driver: Driver) -> None:
    """So the alert shows the count that stands, not the one taken back."""
    driver.apply(neut("N-1", "0.8", 6))
    driver.apply(neut("N-2", "0.3", 7))
    standing = withdrawn(driver.apply(status("A-1", "lab", "N-2"))).data.standing_result
    assert standing is not None
    assert (standing.value, standing.test, standing.collected_at.day, standing.floor) == ("0.8", "NEUT", 6, False)
    assert standing.reason == "grade 3: 0.8 10^9/L < 1.0 10^9/L"


# --- a result corrected within its grade: what the alert shows of it is revised, nobody paged ----------------------


def test_the_paged_result_corrected_within_its_grade_is_named_with_its_corrected_value(driver: Driver) -> None:
    """N-1 (0.3, grade 4) pages; the lab corrects it to 0.4, still grade 4. Nothing pages, but the alert showing N-1
    must show 0.4: it is named as both the result withdrawn and the one that stands, carrying the finding's number.
    Before, a correction within the grade raised nothing and the alert kept the value the site replaced."""
    [page] = of_type(driver.apply(neut("N-1", "0.3", 6)), "lab.toxicity")
    signals = driver.apply(neut("N-1", "0.4", 6, sender="corrected"))
    assert of_type(signals, "lab.toxicity") == [], "the grade signalled still stands: no page"
    data = withdrawn(signals).data
    assert (data.term, data.withdrawn_grade, data.standing_grade) == (NEUT, 4, 4)
    assert (data.withdrawn_result_id, data.standing_result_id, data.sequence) == ("N-1", "N-1", page.data.sequence)
    assert data.standing_result is not None
    assert (data.standing_result.value, data.standing_result.reason) == ("0.4", "grade 4: 0.4 10^9/L < 0.5 10^9/L")
    assert data.why == "result N-1 corrected by the site: 0.3 10^9/L -> 0.4 10^9/L"


def test_a_collection_time_corrected_within_the_grade_is_named_with_its_corrected_time(driver: Driver) -> None:
    """N-1 was drawn on day 7, not day 6 as first keyed: the officer must see when the count was taken."""
    driver.apply(neut("N-1", "0.3", 6))
    first = neut("N-1", "0.3", 6, sender="corrected")
    day7 = datetime(2026, 3, 7, 8, tzinfo=UTC)
    fixed = first.model_copy(update={"data": first.data.model_copy(update={"collected_at": day7})})
    data = withdrawn(driver.apply(fixed)).data
    assert (data.withdrawn_result_id, data.standing_result_id, data.standing_grade) == ("N-1", "N-1", 4)
    assert data.standing_result is not None and data.standing_result.collected_at == day7
    assert data.why == "result N-1 corrected by the site: its collection time changed"


def test_a_unit_rewritten_for_the_same_quantity_revises_nothing(driver: Driver) -> None:
    """0.3 10^9/L re-sent as 0.30 10^3/uL is the same count: nothing the alert shows is wrong, nothing is raised."""
    driver.apply(neut("N-1", "0.3", 6))
    resent = neut("N-1", "0.30", 6, sender="unit")
    resent = resent.model_copy(update={"data": resent.data.model_copy(update={"unit": "10^3/uL"})})
    assert lab_findings(driver.apply(resent)) == []


def test_a_correction_within_a_grade_below_the_one_signalled_names_nothing(driver: Driver) -> None:
    """N-1 grade 3 then N-2 grade 4 paged; N-1 corrected from 0.8 to 0.9 (grade 3): no alert shows N-1 now."""
    driver.apply_all([neut("N-1", "0.8", 6), neut("N-2", "0.3", 7)])
    assert of_type(driver.apply(neut("N-1", "0.9", 6, sender="corrected")), "lab.toxicity_withdrawn") == []


def test_a_result_corrected_up_to_the_grade_signalled_names_nothing(driver: Driver) -> None:
    """N-1 grade 4 paged; N-2 (0.8, grade 3) corrected to 0.4 (grade 4, not news): N-2 never paged at grade 4, the
    alert shows N-1, which stands."""
    driver.apply_all([neut("N-1", "0.3", 6), neut("N-2", "0.8", 7)])
    assert lab_findings(driver.apply(neut("N-2", "0.4", 7, sender="corrected"))) == []


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        (("10", "10^9/L"), ("10", "10^3/uL"), True),
        (("10", "10^9/L"), ("10000", "/uL"), True),
        (("10", "10^9/L"), ("10.0", "10^9/L"), True),
        (("<1.0", "10^9/L"), ("<1.0", "10^3/uL"), True),
        (("10", "10^9/L"), ("22", "10^9/L"), False),
        (("<1.0", "10^9/L"), ("0.8", "10^9/L"), False),
        (("<1.0", "10^9/L"), (">1.0", "10^9/L"), False),
        (("10", "10^9/L"), ("10", "/uL"), False),
        (("10", "odd/unit"), ("10", "other/unit"), False),
    ],
)
def test_what_counts_as_the_same_quantity(old: tuple[str, str], new: tuple[str, str], same: bool) -> None:
    assert same_quantity(*old, *new) is same
