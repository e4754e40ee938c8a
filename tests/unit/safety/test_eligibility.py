"""Eligibility at the first infusion: the shipped NCT07212335 rules, their boundaries and the missing-data cases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.safety.eligibility import LabReading, judge
from shared.events import ScreeningHistory
from shared.protocol import EligibilityRules, load_protocol

DOSE_AT = datetime(2026, 3, 2, 10, tzinfo=UTC)
CAR_T = date(2026, 1, 20)  # 41 days before the dose


@pytest.fixture(scope="module")
def rules() -> EligibilityRules:
    rules = load_protocol(None).eligibility
    assert rules is not None
    return rules


def lab(test: str, value: str, unit: str | None = None, uln: str | None = None, days_before: int = 2) -> LabReading:
    return LabReading(test, None, value, unit, uln, DOSE_AT - timedelta(days=days_before))


def clean(**overrides: LabReading) -> list[LabReading]:
    labs = {
        "NEUT": lab("NEUT", "0.8", "10^9/L"),
        "PLAT": lab("PLAT", "45", "10^9/L"),
        "HGB": lab("HGB", "85", "g/L"),
        "CREAT": lab("CREAT", "80", "umol/L", uln="100"),
        "ALT": lab("ALT", "40", "U/L", uln="40"),
        "AST": lab("AST", "35", "U/L", uln="40"),
        "BILI": lab("BILI", "15", "umol/L", uln="21"),
        "QTCF": lab("QTCF", "430", "ms"),
        "HBA1C": lab("HBA1C", "5.8", "%"),
    }
    labs.update(overrides)
    return list(labs.values())


HISTORY = [
    ScreeningHistory(code="anti_tumour_therapy", answer=False),
    ScreeningHistory(code="live_vaccine", answer=False),
    ScreeningHistory(code="severe_infection", answer=False),
]


def verdict(rules: EligibilityRules, labs: list[LabReading], *, car_t: date | None = CAR_T, history=HISTORY):  # type: ignore[no-untyped-def]
    return judge(
        rules, first_dose_at=DOSE_AT, first_dose_on=DOSE_AT.date(), car_t_infused_on=car_t, history=history, labs=labs
    )


def test_a_subject_meeting_every_criterion_is_eligible(rules: EligibilityRules) -> None:
    assert verdict(rules, clean()).status == "eligible"


@pytest.mark.parametrize(("value", "status"), [("1.0", "eligible"), ("1.01", "not_eligible"), ("<1.0", "eligible")])
def test_anc_exactly_1_0_is_severe_cytopenia(rules: EligibilityRules, value: str, status: str) -> None:
    labs = clean(NEUT=lab("NEUT", value, "10^9/L"), PLAT=lab("PLAT", "31", "10^9/L"), HGB=lab("HGB", "71", "g/L"))
    result = verdict(rules, labs)
    assert result.status == status
    if status == "not_eligible":
        assert "inclusion severe cytopenia" in result.failed[0]


def test_haemoglobin_limit_is_70_g_per_litre_and_g_per_decilitre_is_converted(rules: EligibilityRules) -> None:
    no_count = {"NEUT": lab("NEUT", "1.5", "10^9/L"), "PLAT": lab("PLAT", "80", "10^9/L")}
    assert verdict(rules, clean(**no_count, HGB=lab("HGB", "70", "g/L"))).status == "eligible"
    assert verdict(rules, clean(**no_count, HGB=lab("HGB", "6.8", "g/dL"))).status == "eligible"  # 68 g/L
    assert verdict(rules, clean(**no_count, HGB=lab("HGB", "7.1", "g/dL"))).status == "not_eligible"  # 71 g/L


def test_a_count_from_before_day_21_after_car_t_does_not_show_the_inclusion(rules: EligibilityRules) -> None:
    result = verdict(rules, clean(), car_t=DOSE_AT.date() - timedelta(days=22))  # the count is on day 20
    assert result.status == "not_eligible"
    assert "before day 21 after CAR-T" in result.failed[0]
    assert verdict(rules, clean(), car_t=DOSE_AT.date() - timedelta(days=23)).status == "eligible"  # day 21


@pytest.mark.parametrize(
    ("test", "value", "unit", "uln", "status"),
    [
        ("CREAT", "149", "umol/L", "100", "eligible"),
        ("CREAT", "150", "umol/L", "100", "not_eligible"),  # exactly 1.5 x ULN excludes
        ("ALT", "119", "U/L", "40", "eligible"),
        ("ALT", "120", "U/L", "40", "not_eligible"),  # 3 x ULN
        ("AST", "120", "U/L", "40", "not_eligible"),
        ("BILI", "31.5", "umol/L", "21", "not_eligible"),
        ("QTCF", "480", "ms", None, "eligible"),  # > 480 excludes, 480 does not
        ("QTCF", "481", "ms", None, "not_eligible"),
        ("HBA1C", "9.0", "%", None, "eligible"),
        ("HBA1C", "9.1", "%", None, "not_eligible"),
    ],
)
def test_exclusion_boundaries(
    rules: EligibilityRules, test: str, value: str, unit: str, uln: str | None, status: str
) -> None:
    assert verdict(rules, clean(**{test: lab(test, value, unit, uln)})).status == status


def test_bun_excludes_when_sent_and_is_not_required(rules: EligibilityRules) -> None:
    assert verdict(rules, clean(BUN=lab("BUN", "12", "mmol/L", uln="8"))).status == "not_eligible"
    assert verdict(rules, clean()).status == "eligible"  # no BUN: creatinine judges the kidney


def test_missing_or_unreadable_screening_data_is_never_a_pass(rules: EligibilityRules) -> None:
    without_alt = [reading for reading in clean() if reading.test != "ALT"]
    result = verdict(rules, without_alt)
    assert result.status == "data_missing" and "ALT" in result.missing[0]
    assert verdict(rules, clean(ALT=lab("ALT", "50", "U/L"))).status == "data_missing"  # no ULN
    assert verdict(rules, clean(QTCF=lab("QTCF", "430", None))).status == "data_missing"  # no unit
    assert verdict(rules, clean(), car_t=None).status == "data_missing"
    assert verdict(rules, clean(), history=[]).status == "data_missing"


def test_labs_outside_the_screening_window_or_after_the_dose_do_not_count(rules: EligibilityRules) -> None:
    old = clean(ALT=lab("ALT", "40", "U/L", uln="40", days_before=15))
    assert verdict(rules, old).status == "data_missing"
    edge = clean(ALT=lab("ALT", "40", "U/L", uln="40", days_before=14))
    assert verdict(rules, edge).status == "eligible"
    after = [*clean(), LabReading("ALT", None, "500", "U/L", "40", DOSE_AT + timedelta(hours=1))]
    assert verdict(rules, after).status == "eligible"
    # the latest result before the dose is the screening value
    latest = [*clean(), lab("ALT", "200", "U/L", uln="40", days_before=1)]
    assert verdict(rules, latest).status == "not_eligible"


def test_ineligibility_wins_over_missing_data(rules: EligibilityRules) -> None:
    labs = [reading for reading in clean(QTCF=lab("QTCF", "500", "ms")) if reading.test != "ALT"]
    result = verdict(rules, labs)
    assert result.status == "not_eligible" and result.missing
    assert "QTcF > 480 ms" in result.detail() and "screening data missing" in result.detail()


@pytest.mark.parametrize(
    ("code", "days_before", "excluded"),
    [
        ("anti_tumour_therapy", 31, True),
        ("anti_tumour_therapy", 32, False),
        ("live_vaccine", 28, True),
        ("live_vaccine", 29, False),
        ("severe_infection", 7, True),
        ("severe_infection", 8, False),
    ],
)
def test_dated_history_events_exclude_inside_their_window(
    rules: EligibilityRules, code: str, days_before: int, excluded: bool
) -> None:
    history = [h for h in HISTORY if h.code != code]
    history.append(ScreeningHistory(code=code, last_on=DOSE_AT.date() - timedelta(days=days_before)))
    assert verdict(rules, clean(), history=history).status == ("not_eligible" if excluded else "eligible")


def test_a_coded_yes_excludes(rules: EligibilityRules) -> None:
    history = [*HISTORY[:2], ScreeningHistory(code="severe_infection", answer=True)]
    result = verdict(rules, clean(), history=history)
    assert result.status == "not_eligible" and "severe infection" in result.failed[0]
