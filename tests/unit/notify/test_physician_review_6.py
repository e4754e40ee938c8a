"""A safety physician (review 6) tries to break the signal lanes and the page classes (shared.lanes, notify's
urgency): can a message that must page now be taken as routine, can the routine lane be starved, and does the order
the two lanes hand notify one case's signals in change what the officer is left with?"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlmodel import Session, select

from services.notify import models, urgency
from services.notify.models import Alert, Obligation
from shared.clock import FakeClock
from shared.db import create_tables, make_engine
from shared.events import DataQualityData, DataQualityFlagged, EnvelopeBase, ProtocolDeviation, ProtocolDeviationData
from shared.kafka import BULK_TURN_AFTER, ConsumedMessage, ConsumerLoop, Rejected
from shared.lanes import ROUTINE_SIGNALS, routine_topic
from shared.metrics import ConsumerMetrics
from shared.outbox import Outgoing, outbox_row
from shared.protocol import Protocol
from tests.unit.notify.conftest import Notifier
from tests.unit.notify.test_decided_dlt_data_review import DM
from tests.unit.notify.test_obligations import MM, SO, to
from tests.unit.safety.clinical import Driver, ae
from tests.unit.safety.test_clinical_rules import at
from tests.unit.safety.test_physician_review_3 import dosed, site_status
from tests.unit.shared.test_consumer_loop import BULK, URGENT, DeadLetters, ScriptedConsumer, record

SIGNALS = "sentinel.signals.v1"
NOW = datetime(2026, 3, 9, 10, tzinfo=UTC)


def deviation(kind: str, *, pages: bool, n: int = 1) -> ProtocolDeviation:
    data = ProtocolDeviationData(
        site_id="SITE-1",
        subject_id="A-1",
        arm="A",
        kind=kind,
        detail=f"{kind}: the physician's case",
        pages=pages,
        notify_roles=["principal_investigator"],
    )
    return ProtocolDeviation(
        id=f"dev-{kind}-{n}", source="/services/safety", subject="A-1", time=NOW, trialid="NCT07212335", data=data
    )


def lane(envelope: EnvelopeBase) -> str:
    row = outbox_row(producer="safety", message=Outgoing(topic=SIGNALS, key=b"k", envelope=envelope), now=NOW)
    return str(row["topic"])


# --- what must page now is not routine ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["dosed_while_ineligible", "product_not_released", "overdose", "enrolled_into_stopped_arm"]
)
def test_a_deviation_that_pages_takes_the_signals_lane_not_the_routine_one(kind: str) -> None:
    """A subject dosed while ineligible, from a lot that failed release, overdosed, or enrolled into a stopped arm is
    at risk now (the protocol: 'pages at once'): it must not wait behind a backfill's lab toxicities. Fixed in
    shared.lanes (a deviation is its own alert thread, so no thread spans two lanes)."""
    assert lane(deviation(kind, pages=True)) == SIGNALS
    assert lane(deviation(kind, pages=False)) == routine_topic(SIGNALS), "a premedication slip stays routine"


def test_a_paging_deviation_is_a_page_with_a_review_clock_and_a_non_paging_one_a_digest(
    notifier: Notifier,
) -> None:
    notifier.apply(deviation("dosed_while_ineligible", pages=True, n=1))
    notifier.apply(deviation("premedication_not_as_planned", pages=False, n=2))
    by_alert = {d.alert_id: d.urgency for d in notifier.deliveries()}
    kinds = {a.id: a.details["kind"] for a in notifier.rows(Alert)}
    classes = {kinds[a]: u for a, u in by_alert.items()}
    assert classes == {"dosed_while_ineligible": urgency.PAGE, "premedication_not_as_planned": urgency.DIGEST}
    [review] = notifier.rows(Obligation)
    assert review.due_at == NOW + timedelta(hours=notifier.protocol.dlt.review_hours)


def test_every_case_and_decision_signal_is_off_the_routine_lane() -> None:
    """SAE, SUSAR, DLT, acute reaction, stopping rule: never routine (the routine kinds: those the README names)."""
    expected = {
        "lab.toxicity",
        "lab.toxicity_withdrawn",
        "data_quality.flagged",
        "assessment.missed",
        "protocol.deviation",
        "response.lost",
    }
    assert expected == ROUTINE_SIGNALS
    for kind in ("sae", "susar", "dlt", "stopping_rule", "acute_reaction", "dead_letter"):
        assert urgency.urgency_of(alert_kind=kind, has_open_obligation=False) == urgency.CRITICAL, kind
    assert urgency.urgency_of(alert_kind="lab_toxicity", has_open_obligation=True) == urgency.PAGE
    assert urgency.urgency_of(alert_kind="data_quality", has_open_obligation=False) == urgency.NOTICE


# --- the order the two lanes hand notify one case's signals in ------------------------------------------------------


def notify_state(engine: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with Session(engine) as session:
        obligations = sorted(
            (o.kind, o.subject_id, o.clock_started_at, o.due_at, o.state) for o in session.exec(select(Obligation))
        )
        alerts = sorted((a.kind, a.thread_key, a.state) for a in session.exec(select(Alert)))
    return obligations, alerts


def reentry_signals(tmp_path: Path, protocol: Protocol) -> list[EnvelopeBase]:
    """Safety's signals for a hospitalised febrile neutropenia (AE-1) the site deleted and re-entered as AE-2 the next
    morning: AE-1's SAE withdrawn, AE-2's SAE on AE-1's clock, and the re-entry finding (routine lane)."""
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/safety.db"), protocol)
    driver.apply_all(dosed(), now=at(0, 10))

    def fn(ae_id: str, received: datetime) -> Any:
        return ae(
            "A-1",
            ae_id=ae_id,
            received=received,
            term="Febrile neutropenia",
            grade=3,
            relatedness="not_related",
            onset=at(5).date().isoformat(),
            seriousness={"hospitalization": True},
        )

    out = driver.apply(fn("AE-1", at(5, 14)), now=at(5, 14))
    out += driver.apply(site_status("deleted", at(6, 8), reason="wrong form"), now=at(6, 8))
    out += driver.apply(fn("AE-2", at(6, 9)), now=at(6, 9))
    return [s for s in out if str(getattr(s, "type", "")).startswith(("sae.", "data_quality."))]


@pytest.mark.parametrize("order", ["as_produced", "lanes", "routine_first"])
def test_an_sae_re_entry_and_its_finding_end_in_one_notify_state_whatever_lane_goes_first(
    protocol: Protocol, tmp_path: Path, order: str
) -> None:
    """The re-entry's finding travels on the routine lane, the SAE signals on the signals lane: handed to notify as
    produced, signals lane first, or (a lagging signals consumer) routine first, the officer is left with the same
    alerts and the same open SAE report obligation, due 24 h after AE-1's first receipt."""
    signals = reentry_signals(tmp_path, protocol)
    routine = [s for s in signals if str(getattr(s, "type", "")) in ROUTINE_SIGNALS]
    assert routine and len(routine) < len(signals)
    if order == "lanes":
        signals = [s for s in signals if s not in routine] + routine
    elif order == "routine_first":
        signals = routine + [s for s in signals if s not in routine]
    engines = {}
    for name, sequence in (("reference", reentry_signals(tmp_path / "ref", protocol)), (order, signals)):
        engine = make_engine(f"sqlite:///{tmp_path}/notify-{name}.db")
        create_tables(engine, models.TABLES)
        notifier = Notifier(engine=engine, protocol=protocol, clock=FakeClock(at(6, 10)))
        for signal in sequence:
            notifier.apply(signal)
        engines[name] = engine
    obligations, alerts = notify_state(engines[order])
    assert (obligations, alerts) == notify_state(engines["reference"])
    open_reports = [o for o in obligations if o[4] in ("open", "overdue")]
    assert [(o[0], o[2], o[3]) for o in open_reports] == [("sae_report", at(5, 14), at(6, 14))]


# --- can the routine lane be starved ---------------------------------------------------------------------------------


async def test_a_routine_signal_is_handled_within_a_bounded_number_of_critical_batches() -> None:
    """While critical signals keep arriving faster than one batch (a replay, a backfill of serious AEs), the routine
    lane used to wait until that stream ended, however long: a grade 4 lab toxicity's page (reviewed within 24 h by
    protocol) or the finding about an SAE's clock with it. Fixed in shared.kafka: after BULK_TURN_AFTER priority
    batches in a row, the bulk (routine) lane gets one batch."""
    stop = asyncio.Event()
    consumer = ScriptedConsumer({BULK: [record(BULK, 0)], URGENT: [record(URGENT, 0)]}, stop)
    handled: list[str] = []
    critical = 1

    async def handler(messages: Sequence[ConsumedMessage]) -> list[Rejected]:
        nonlocal critical
        handled.extend(m.topic for m in messages)
        if critical < 40:  # a critical signal arrives during every batch, for 40 batches
            consumer.buffered.setdefault(URGENT, []).append(record(URGENT, critical))
            critical += 1
        return []

    loop = ConsumerLoop(
        name="notify",
        consumer_factory=lambda: consumer,  # type: ignore[arg-type,return-value]
        handler=handler,
        dead_letters=DeadLetters([]),
        metrics=ConsumerMetrics.create(CollectorRegistry(), "notify"),
        priority_topics=[URGENT.topic],
        max_batch=50,
        bulk_batch=50,
    )
    await asyncio.wait_for(loop.run(stop), timeout=5)
    assert BULK.topic in handled, "the routine record was handled at all"
    waited = handled.index(BULK.topic)
    assert waited <= BULK_TURN_AFTER, f"the routine record waited {waited} critical batches"
    assert handled.count(URGENT.topic) == 40, "and every critical signal is still handled"


# --- a death reported only as the subject's disposition --------------------------------------------------------------


def death_without_fatal_ae() -> DataQualityFlagged:
    """Safety's finding when the site records the subject as died with no fatal AE on record (no SAE clock, no grade 5
    DLT can start from it until the site reports the AE)."""
    data = DataQualityData(
        site_id="SITE-1",
        subject_id="A-1",
        record_type="subject_status",
        record_id="status-1",
        code="death_without_fatal_ae",
        detail="the subject died on 2026-03-08 but no AE with a fatal outcome is on record",
        source_event_id="status-1",
    )
    return DataQualityFlagged(
        id="dq-death-1", source="/services/safety", subject="A-1", time=NOW, trialid="NCT07212335", data=data
    )


async def test_a_death_without_a_fatal_ae_is_told_to_the_sae_roles_not_only_the_data_manager(
    notifier: Notifier,
) -> None:
    """A death on study in a phase 1 trial: the safety officer and the medical monitor must hear of it at once (a
    possible SAE with a 24 h clock, a grade 5 DLT, the arm's stopping rule), not only the site's data manager, and it
    does not wait behind a backfill's routine signals. Fixed: the finding goes to `sae.notify_roles` too (notify) and
    takes the signals topic (shared.lanes; its thread is one record and code, so it never spans two lanes)."""
    notifier.apply(death_without_fatal_ae())
    sent = await notifier.at(NOW)
    assert to(sent) == [DM, MM, SO]
    assert lane(death_without_fatal_ae()) == SIGNALS


async def test_an_sae_replaced_by_a_non_serious_ae_is_told_to_the_sae_roles(notifier: Notifier, tmp_path: Path) -> None:
    """Safety's finding that a serious AE was taken back for a replacement not reported serious (its SAE report is no
    longer tracked) reaches the safety officer and the medical monitor, not only the site's data manager."""
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/safety.db"), notifier.protocol)
    driver.apply_all(dosed(), now=at(0, 10))
    serious = ae("A-1", ae_id="AE-1", term="Febrile neutropenia", grade=3, seriousness={"hospitalization": True})
    driver.apply(serious, now=at(5))
    retraction = site_status("entered_in_error", at(6), reason="re-entered")
    driver.apply(retraction.model_copy(update={"data": retraction.data.model_copy(update={"replaced_by": "AE-2"})}))
    out = driver.apply(ae("A-1", ae_id="AE-2", term="Febrile neutropenia", grade=3), now=at(6, 1))
    [finding] = [s for s in out if getattr(s.data, "code", None) == "sae_replaced_by_non_serious"]
    notifier.apply(finding)
    assert to(await notifier.at(NOW)) == [DM, MM, SO]
    subject = str(notifier.channel.sent[-1]["Subject"])
    assert "SAE taken back and replaced by an AE not reported serious" in subject
