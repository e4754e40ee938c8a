"""SUSAR rules: expectedness against the RSI, the SUSAR decision and its day 0, through the safety consumer."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from services.safety.expedited import cases
from services.safety.expedited.expectedness import propose_expectedness
from services.safety.expedited.susar import CaseFacts, Standing, SusarClock, decide
from services.safety.models import SusarCase
from shared.audit import AuditEntry
from shared.protocol import Protocol, ReferenceSafetyInformation
from tests.unit.safety.clinical import RECEIVED, SIGNALS, Driver, ae, of_type

RSI = ReferenceSafetyInformation.model_validate(
    {
        "product": "UC-MSC",
        "version": "2.0",
        "date": "2026-03-02",
        "expected_reactions": [
            {"term": "Infusion related reaction", "meddra_code": "10051792", "max_grade": 2},
            {"term": "Fever"},
            {"term": "Sepsis", "max_grade": 5},
        ],
    }
)


@pytest.mark.parametrize(
    ("term", "code", "grade", "fatal", "expected"),
    [
        ("Infusion related reaction", None, 2, False, "expected"),
        ("infusion RELATED reaction", None, 1, False, "expected"),  # case-insensitive
        ("Infusion reaction (as the site wrote it)", "10051792", 2, False, "expected"),  # by MedDRA code
        ("Infusion related reaction", None, 3, False, "unexpected"),  # worse than the highest expected grade
        ("Infusion related reaction", None, None, False, "unexpected"),  # a ceiling and no grade: cannot tell
        ("Fever", None, 4, False, "expected"),  # listed without a ceiling
        ("Fever", None, 5, True, "unexpected"),  # fatal, and the RSI does not list it as fatal
        ("Sepsis", None, 5, True, "expected"),  # listed as possibly fatal
        ("Pneumonitis", None, 2, False, "unexpected"),  # not listed
    ],
)
def test_expectedness_is_proposed_from_the_rsi(
    term: str, code: str | None, grade: int | None, fatal: bool, expected: str
) -> None:
    proposal = propose_expectedness(RSI, term=term, meddra_code=code, grade=grade, fatal=fatal)
    assert proposal.expectedness == expected
    assert proposal.rsi_version == "2.0"
    assert "v2.0 (2026-03-02)" in proposal.reason


T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def facts(**overrides: object) -> CaseFacts:
    values: dict[str, object] = {
        "criteria": frozenset({"hospitalization"}),
        "site_relatedness": "possible",
        "sponsor_causality": None,
        "expectedness": "unexpected",
        "ae_version": 1,
    }
    values.update(overrides)
    return CaseFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("site", "sponsor", "susar"),
    [
        ("possible", None, True),
        ("probable", "not_related", True),  # the sponsor cannot downgrade the investigator
        ("unlikely", "related", True),  # the sponsor's own causality counts too
        ("unlikely", None, False),
        ("not_related", "not_related", False),
        (None, None, False),
    ],
)
def test_related_when_either_the_site_or_the_sponsor_says_so(
    site: str | None, sponsor: str | None, susar: bool
) -> None:
    assert facts(site_relatedness=site, sponsor_causality=sponsor).susar is susar


def test_a_susar_starts_its_clock_at_the_moment_given_and_upgrades_keep_it() -> None:
    detected = decide(SusarClock(), Standing(facts(), clock_start=T0, clock_basis="receipt"))
    assert detected.change == "detected"
    assert detected.clock.clock_start == T0 and not detected.clock.fatal_or_life_threatening
    later = T0 + timedelta(days=4)
    fatal = facts(criteria=frozenset({"death"}), ae_version=2)
    upgraded = decide(detected.clock, Standing(fatal, clock_start=T0, clock_basis="receipt", upgraded_at=later))
    assert upgraded.change == "upgraded"
    assert upgraded.clock.clock_start == T0 and upgraded.clock.upgraded_at == later
    again = decide(upgraded.clock, Standing(fatal, clock_start=T0, clock_basis="receipt", upgraded_at=later))
    assert again.change is None  # nothing new
    v3 = facts(criteria=frozenset({"death"}), ae_version=3)
    follow = decide(upgraded.clock, Standing(v3, clock_start=T0, clock_basis="receipt", upgraded_at=later))
    assert follow.change == "follow_up"
    withdrawn = decide(follow.clock, Standing(facts(expectedness="expected", ae_version=3)))
    assert withdrawn.change == "withdrawn" and not withdrawn.clock.susar


def test_not_serious_or_expected_is_never_a_susar() -> None:
    assert decide(SusarClock(), Standing(facts(criteria=frozenset()))).change is None
    assert decide(SusarClock(), Standing(facts(expectedness="expected"))).change is None


# --- through the safety consumer ------------------------------------------------------------------------

FATAL = {"death": True}


def test_a_fatal_related_unexpected_ae_signals_a_fatal_susar_with_day0_at_receipt(
    engine: Engine, protocol: Protocol
) -> None:
    driver = Driver(engine, protocol)
    signals = driver.apply(
        ae("S-001", term="Pneumonitis", grade=5, relatedness="probable", seriousness=FATAL, outcome="fatal")
    )
    [susar] = of_type(signals, "susar.detected")
    data = susar.data
    assert data.fatal_or_life_threatening and data.clock_start == RECEIVED
    assert data.meddra_code == "10035742"  # from the CTCAE v5.0 list: the site sent none
    assert data.expectedness == "unexpected" and data.expectedness_basis == "rsi_proposal"
    assert data.rsi_version == protocol.reference_safety_information.version  # type: ignore[union-attr]
    assert data.report_version == 1 and data.case_id == "NCT07212335-S-001-AE-1"


def test_an_expected_or_non_serious_ae_signals_no_susar(engine: Engine, protocol: Protocol) -> None:
    driver = Driver(engine, protocol)
    expected = ae(
        "S-001",
        term="Infusion related reaction",
        grade=2,
        relatedness="definite",
        seriousness={"hospitalization": True},
    )
    non_serious = ae("S-001", ae_id="AE-2", term="Pneumonitis", grade=2, relatedness="definite", serious=False)
    signals = driver.apply_all([expected, non_serious])
    assert of_type(signals, "sae.detected")  # the SAE clock still runs for the expected one
    assert not [s for s in signals if str(getattr(s, "type", "")).startswith("susar.")]
    with Session(engine) as session:
        [case] = session.exec(select(SusarCase)).all()  # a file for the SAE only, not the non-serious AE
        assert case.proposed_expectedness == "expected" and not case.susar


def test_a_follow_up_that_makes_it_fatal_is_an_upgrade(engine: Engine, protocol: Protocol) -> None:
    driver = Driver(engine, protocol)
    hosp = {"hospitalization": True}
    driver.apply(ae("S-001", term="Pneumonitis", grade=3, relatedness="possible", seriousness=hosp))
    later = RECEIVED + timedelta(days=4)
    v2 = ae(
        "S-001",
        version=2,
        term="Pneumonitis",
        grade=5,
        relatedness="possible",
        seriousness=hosp | FATAL,
        received=later,
    )
    [upgrade] = of_type(driver.apply(v2, now=later), "susar.updated")
    assert upgrade.data.change == "upgraded" and upgrade.data.upgraded_at == later
    assert upgrade.data.clock_start == RECEIVED and upgrade.data.report_version == 2


def _decide(engine: Engine, protocol: Protocol, what: str, value: str, now: dt.datetime) -> list[object]:
    with Session(engine) as session, session.begin():
        fn = cases.record_causality if what == "causality" else cases.record_expectedness
        kwargs = {"causality": value} if what == "causality" else {"expectedness": value}
        _case, signals = fn(  # type: ignore[operator]
            session,
            protocol=protocol,
            trial_id="NCT07212335",
            subject_id="S-001",
            ae_id="AE-1",
            actor="officer@example",
            reason="reviewed the case",
            now=now,
            signals_topic=SIGNALS,
            **kwargs,
        )
        return [s.envelope for s in signals]


def test_the_sponsors_causality_makes_it_a_susar_from_the_decision(engine: Engine, protocol: Protocol) -> None:
    driver = Driver(engine, protocol)
    signals = driver.apply(
        ae("S-001", term="Pneumonitis", grade=3, relatedness="unlikely", seriousness={"hospitalization": True})
    )
    assert not of_type(signals, "susar.detected")
    decided = RECEIVED + timedelta(days=2)
    [susar] = _decide(engine, protocol, "causality", "related", decided)
    assert susar.type == "susar.detected"  # type: ignore[attr-defined]
    assert susar.data.clock_start == decided and "causality" in susar.data.clock_basis  # type: ignore[attr-defined]
    with Session(engine) as session:
        actions = [e.action for e in session.exec(select(AuditEntry).where(AuditEntry.service == "safety")).all()]
    assert "susar.causality_assessed" in actions and "susar.detected" in actions


def test_the_officer_confirming_expected_withdraws_the_susar(engine: Engine, protocol: Protocol) -> None:
    driver = Driver(engine, protocol)
    driver.apply(
        ae("S-001", term="Pneumonitis", grade=3, relatedness="probable", seriousness={"hospitalization": True})
    )
    [withdrawn] = _decide(engine, protocol, "expectedness", "expected", RECEIVED + timedelta(hours=3))
    assert withdrawn.type == "susar.withdrawn"  # type: ignore[attr-defined]
    assert withdrawn.data.expectedness_basis == "officer"  # type: ignore[attr-defined]
    assert _decide(engine, protocol, "causality", "not_related", RECEIVED + timedelta(hours=4)) == []


def test_the_officer_overriding_expected_to_unexpected_starts_the_clock_at_the_decision(
    engine: Engine, protocol: Protocol
) -> None:
    driver = Driver(engine, protocol)
    expected = ae("S-001", term="Fever", grade=2, relatedness="probable", seriousness={"hospitalization": True})
    assert not [s for s in driver.apply(expected) if str(getattr(s, "type", "")).startswith("susar.")]
    decided = RECEIVED + timedelta(days=1)
    [susar] = _decide(engine, protocol, "expectedness", "unexpected", decided)
    assert susar.type == "susar.detected" and susar.data.clock_start == decided  # type: ignore[attr-defined]


def test_new_facts_supersede_the_officers_expected_confirmation(engine: Engine, protocol: Protocol) -> None:
    driver = Driver(engine, protocol)
    hosp = {"hospitalization": True}
    driver.apply(ae("S-001", term="Fever", grade=2, relatedness="probable", seriousness=hosp))
    _decide(engine, protocol, "expectedness", "expected", RECEIVED + timedelta(hours=1))
    later = RECEIVED + timedelta(days=2)
    worse = ae("S-001", version=2, term="Fever", grade=4, relatedness="probable", seriousness=hosp, received=later)
    [susar] = of_type(driver.apply(worse, now=later), "susar.detected")  # grade 4 is above the RSI's grade 2
    assert susar.data.clock_start == later and susar.data.expectedness_basis == "rsi_proposal"
    with Session(engine) as session:
        case = session.exec(select(SusarCase)).one()
        assert case.confirmed_expectedness is None
        actions = [e.action for e in session.exec(select(AuditEntry)).all()]
    assert "susar.expectedness_confirmation_superseded" in actions
