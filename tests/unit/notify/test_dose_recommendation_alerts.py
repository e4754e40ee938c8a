"""Notify on the 3+3's final answer and on deviations that put subjects at risk: both page with a review clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from services.notify import models
from services.notify.models import Alert, Delivery, Obligation
from services.notify.signals import apply_signal
from shared.db import create_tables
from shared.events import (
    CohortData,
    DoseRecommendationData,
    DoseRecommended,
    ProtocolDeviation,
    ProtocolDeviationData,
)
from shared.inbox import ProcessedEvent
from shared.outbox import OutboxMessage
from shared.protocol import Protocol

NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def apply(engine: Engine, protocol: Protocol) -> Iterator[Any]:
    create_tables(engine, [*models.TABLES, ProcessedEvent, OutboxMessage])

    def run(signal: Any, now: datetime = NOW) -> None:
        with Session(engine) as session, session.begin():
            assert apply_signal(session, signal, now, protocol=protocol) == []

    yield run


def all_rows(engine: Engine, model: Any) -> list[Any]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.execute(select(model)).scalars().all())


def arm(name: str, decision: str) -> CohortData:
    return CohortData(
        arm=name,
        enrolled=6,
        evaluable=6,
        dlt_confirmed=1,
        dlt_suspected=0,
        decision=decision,  # type: ignore[arg-type]
        previous_decision=None,
        next_arm=None,
        reason="r",
    )


def recommended(arm_id: str | None, basis: str, revision: int, previous: str | None = None) -> DoseRecommended:
    return DoseRecommended(
        id=f"rec-{revision}",
        source="/services/safety",
        subject="trial",
        time=NOW,
        trialid="NCT07212335",
        data=DoseRecommendationData(
            recommended_arm=arm_id,
            basis=basis,  # type: ignore[arg-type]
            previous_arm=previous,
            reason=f"recommended dose: arm {arm_id}",
            arms=[arm("A", "escalate"), arm("B", "escalate"), arm("C", "recommend")],
        ),
    )


def test_a_recommended_dose_pages_with_a_committee_review_obligation(apply: Any, engine: Engine) -> None:
    apply(recommended("C", "highest_arm_cleared", 1))
    [alert] = all_rows(engine, Alert)
    assert alert.kind == "dose_recommendation" and "arm C" in alert.title
    [obligation] = all_rows(engine, Obligation)
    assert obligation.kind == "dose_recommendation_review"
    assert obligation.due_at.replace(tzinfo=UTC) == NOW + timedelta(hours=72)
    deliveries = all_rows(engine, Delivery)
    assert deliveries and all("Recommended dose: arm C" in d.subject for d in deliveries)
    apply(recommended("C", "highest_arm_cleared", 1))  # re-delivery: nothing new
    assert len(all_rows(engine, Obligation)) == 1
    apply(recommended(None, "withdrawn", 2, previous="C"))  # a late DLT reopened it: page again
    assert len(all_rows(engine, Obligation)) == 2
    assert any("withdrawn" in d.subject for d in all_rows(engine, Delivery))


def deviation(pages: bool) -> ProtocolDeviation:
    return ProtocolDeviation(
        id=f"dev-{pages}",
        source="/services/safety",
        subject="B-1",
        time=NOW,
        trialid="NCT07212335",
        data=ProtocolDeviationData(
            site_id="SITE-1",
            subject_id="B-1",
            arm="B",
            kind="enrolled_above_arm_hold",
            detail="arm A held",
            pages=pages,
        ),
    )


def test_a_deviation_that_puts_subjects_at_risk_pages_and_a_plain_one_only_notifies(apply: Any, engine: Engine) -> None:
    apply(deviation(False))
    assert all_rows(engine, Obligation) == []
    apply(deviation(True))
    [obligation] = all_rows(engine, Obligation)
    assert obligation.kind == "deviation_review"
    assert any(d.subject.startswith("[NCT07212335] URGENT") for d in all_rows(engine, Delivery))


def test_an_eligibility_deviation_pages_the_roles_it_names_with_the_dlt_roles(apply: Any, engine: Engine) -> None:
    """Issue 13: dosed while ineligible pages the officer AND the PI (the protocol's eligibility.notify_roles)."""
    apply(
        ProtocolDeviation(
            id="dev-eligibility",
            source="/services/safety",
            subject="A-9",
            time=NOW,
            trialid="NCT07212335",
            data=ProtocolDeviationData(
                site_id="SITE-1",
                subject_id="A-9",
                arm="A",
                kind="dosed_while_ineligible",
                detail="first infusion 2026-05-01: not eligible: exclusion ALT >= 3 x ULN",
                pages=True,
                notify_roles=["safety_officer", "principal_investigator"],
            ),
        )
    )
    deliveries = all_rows(engine, Delivery)
    assert {d.recipient for d in deliveries} >= {
        "safety.officer@sentinel.example",
        "principal.investigator@sentinel.example",
        "medical.monitor@sentinel.example",
    }
    assert all("URGENT Protocol deviation (dosed_while_ineligible)" in d.subject for d in deliveries)
    [obligation] = all_rows(engine, Obligation)
    assert obligation.kind == "deviation_review"
