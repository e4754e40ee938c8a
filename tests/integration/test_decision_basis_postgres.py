"""The decided-DLT finding (dlt_decision_basis) in safety's batch on PostgreSQL: follow-ups under confirmed DLTs cost
the statements they cost under suspected ones (the rule reads only what the subject's load already holds), and the
one that takes its AE out of the criterion is told once, in the batch that brings it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from shared.db import make_engine
from shared.protocol import load_protocol
from tests.unit.safety.clinical import Driver, of_type
from tests.unit.safety.test_batch_settle import apply_in_batches
from tests.unit.safety.test_clinical_rules import DAY0, at, related_ae, subject_in
from tests.unit.safety.test_physician_review_4 import decide, record

pytestmark = pytest.mark.integration
SUBJECTS = ("A-1", "A-2", "A-3")


def arm_a(url: str, *, confirmed: bool) -> Driver:
    driver = Driver(make_engine(url), load_protocol(None))
    for subject in SUBJECTS:
        subject_in(driver, subject, "A")
        driver.apply(related_ae(subject, DAY0 + timedelta(days=9)), now=at(10))
        if confirmed:
            decide(driver, subject, "confirmed", now=at(11))
    return driver


def follow_ups(version: int, relatedness: Callable[[str], str]) -> list[Any]:
    return [
        related_ae(s, DAY0 + timedelta(days=9), version=version, relatedness=relatedness(s), outcome="recovering")
        for s in SUBJECTS
    ]


def counted(driver: Driver, envelopes: list[Any]) -> tuple[int, list[Any]]:
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(driver.engine, "before_cursor_execute", count)
    out = apply_in_batches(driver, envelopes, [len(envelopes)], now=at(14))
    event.remove(driver.engine, "before_cursor_execute", count)
    return len(statements), out


def test_follow_ups_under_confirmed_dlts_cost_no_more_statements(postgres_url: str) -> None:
    driver = arm_a(postgres_url, confirmed=False)
    under_suspicion, _ = counted(driver, follow_ups(2, lambda _s: "probable"))
    for subject in SUBJECTS:
        decide(driver, subject, "confirmed", now=at(12))
    under_decision, out = counted(driver, follow_ups(3, lambda _s: "definite"))
    assert not of_type(out, "data_quality.flagged")
    assert under_decision == under_suspicion, "the rule reads what the subject's load already holds"
    driver.engine.dispose()


def test_a_batch_tells_of_the_one_follow_up_that_takes_its_ae_out_of_the_criterion(postgres_url: str) -> None:
    driver = arm_a(postgres_url, confirmed=True)
    _, out = counted(driver, follow_ups(2, lambda s: "not_related" if s == "A-2" else "probable"))
    [finding] = [f.data for f in of_type(out, "data_quality.flagged") if f.data.code == "decided_dlt_data_changed"]
    assert finding.subject_id == "A-2" and "relatedness from possible to not related" in finding.detail
    assert [record(driver, s).divergence for s in SUBJECTS] == [None, "no_longer_meets", None]
    _, out = counted(driver, [related_ae("A-2", DAY0 + timedelta(days=9), version=3, relatedness="unlikely")])
    assert not of_type(out, "data_quality.flagged"), "told once"
    driver.engine.dispose()
