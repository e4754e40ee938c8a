"""Two shipped protocols, one engine: the same clinical data gives different DLT, window and cohort results
because every rule comes from the file (nothing trial-specific in code)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from importlib import resources

import pytest

from services.cli import main as sentinel
from services.safety.assessments import schedule
from services.safety.dlt import AeFacts, classify
from services.safety.dlt_window import StudyCalendar, enrolment_window, infusion_window
from shared.events import Relatedness
from shared.protocol import Protocol, parse_protocol
from tests.unit.safety.clinical import Driver, ae, dose, enrol, types

FILES = ("nct07212335.yaml", "example-3plus3-dose-levels.yaml")


def shipped(name: str) -> Protocol:
    return parse_protocol(resources.files("shared.protocols").joinpath(name).read_text(encoding="utf-8"), name)


@pytest.fixture(scope="module")
def seed() -> Protocol:
    return shipped(FILES[0])


@pytest.fixture(scope="module")
def dose_levels() -> Protocol:
    return shipped(FILES[1])


def test_both_files_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    for name in FILES:
        path = resources.files("shared.protocols").joinpath(name)
        assert sentinel(["protocol", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "DLT window 28 days after the last planned infusion (anchor = day 0)" in out
    assert "DLT window 21 days from enrolment (anchor = day 1)" in out
    assert "cohorts 3+3 counting subjects, stop at 2 DLTs" in out
    assert "cohorts 3+3 counting events, stop at 2 DLTs" in out


def test_the_protocols_really_differ(seed: Protocol, dose_levels: Protocol) -> None:
    assert seed.trial_id != dose_levels.trial_id
    assert [a.id for a in dose_levels.arms] == ["DL1", "DL2", "DL3", "DL4"]
    assert {c.email for c in seed.contacts}.isdisjoint({c.email for c in dose_levels.contacts})


def facts(term: str, grade: int, relatedness: Relatedness, onset: str) -> AeFacts:
    return AeFacts("AE-1", 1, term, grade, relatedness, onset)


@pytest.mark.parametrize(
    ("ae_facts", "seed_meets", "dose_levels_meets"),
    [
        # possibly related grade 3: the seed trial counts "possible", the dose-level trial wants "probable"
        (facts("Pneumonitis", 3, Relatedness.POSSIBLE, "2026-03-10"), True, False),
        (facts("Pneumonitis", 3, Relatedness.PROBABLE, "2026-03-10"), True, True),
        # unlikely-related grade 3 transaminases: only the dose-level trial has a hepatotoxicity rule
        (facts("Alanine aminotransferase increased", 3, Relatedness.UNLIKELY, "2026-03-10"), False, True),
        # unrelated grade 4: the dose-level trial counts any grade 4
        (facts("Hypertension", 4, Relatedness.NOT_RELATED, "2026-03-10"), False, True),
        # grade 3 neutropenia without baseline: the seed trial counts grade 3, the dose-level trial grade 4 only
        (facts("Neutrophil count decreased", 3, Relatedness.NOT_RELATED, "2026-03-10"), True, False),
        # day 25: inside a 28-day window, outside a 21-day one
        (facts("Pneumonitis", 3, Relatedness.PROBABLE, "2026-03-26"), True, False),
    ],
)
def test_same_ae_different_dlt_verdicts(
    seed: Protocol, dose_levels: Protocol, ae_facts: AeFacts, seed_meets: bool, dose_levels_meets: bool
) -> None:
    anchor = datetime(2026, 3, 2, 10, tzinfo=UTC)
    seed_window = infusion_window(first_infusion=anchor, site_day=None, days=seed.dlt.window_days)
    dl_window = enrolment_window(enrolled_on=anchor.date(), days=dose_levels.dlt.window_days)
    assert classify(ae_facts, rules=seed.dlt, window=seed_window, baseline_grades={}).meets is seed_meets
    assert classify(ae_facts, rules=dose_levels.dlt, window=dl_window, baseline_grades={}).meets is dose_levels_meets


def test_schedules_differ(seed: Protocol, dose_levels: Protocol) -> None:
    day1 = date(2026, 3, 2)
    assert len(schedule(seed.assessments, calendar=StudyCalendar(day1, 0, None))) == 12
    [*_, last] = schedule(dose_levels.assessments, calendar=StudyCalendar(day1, 1, None))
    assert (last.name, last.kinds) == ("day 42 follow-up", ("ae",))


def test_the_enrolment_anchor_opens_the_window_without_an_infusion(
    tmp_path: object, seed: Protocol, dose_levels: Protocol
) -> None:
    """Enrolment, then an AE, no infusion recorded: a DLT for the dose-level trial, not (yet) for the seed."""
    from shared.db import make_engine

    events = {
        "seed": (seed, [enrol("S-1", "A", date(2026, 3, 2), trial=seed.trial_id)]),
        "dl": (dose_levels, [enrol("S-1", "DL1", date(2026, 3, 2), trial=dose_levels.trial_id)]),
    }
    results = {}
    for name, (protocol, first) in events.items():
        other = make_engine(f"sqlite:///{tmp_path}/{name}.db")
        try:
            driver = Driver(other, protocol)
            driver.apply_all(first)
            event = ae("S-1", trial=protocol.trial_id, grade=4, relatedness="probable", onset="2026-03-05")
            results[name] = types(driver.apply(event))
            if name == "seed":
                infusion = dose("S-1", datetime(2026, 3, 2, 10, tzinfo=UTC), trial=protocol.trial_id)
                results["seed after infusion"] = types(driver.apply(infusion))
        finally:
            other.dispose()
    # the arm then awaits the review of the suspected DLT (never escalates on an open question)
    suspected = ["dlt.suspected", "cohort.decision"]
    # the seed's infusion also reveals a subject dosed without screening data (its eligibility rule)
    assert results == {"seed": [], "dl": suspected, "seed after infusion": ["protocol.deviation", *suspected]}
