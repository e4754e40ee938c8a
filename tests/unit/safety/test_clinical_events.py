"""Safety's service layer on a real SQLite session: protocol checks, AE versions, SAE signals."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from services.safety import models
from services.safety.clinical_events import SIGNAL_SOURCE, apply_clinical_event
from services.safety.models import AeSeriousness, AeVersion, Dose, LabResult, Subject
from shared.db import create_tables
from shared.events import (
    DoseAdministered,
    DoseData,
    EnrollmentData,
    LabData,
    LabResulted,
    SaeDetected,
    SaeUpdated,
    SubjectEnrolled,
    deterministic_id,
)
from shared.kafka import PoisonMessage
from shared.outbox import Outgoing
from shared.protocol import Protocol

SIGNALS = "test.signals.v1"
RECEIVED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    create_tables(engine, models.TABLES)
    with Session(engine) as session, session.begin():
        yield session


@pytest.fixture
def apply(session: Session, protocol: Protocol) -> Any:
    def run(envelope: Any) -> Sequence[Outgoing]:
        result = apply_clinical_event(session, envelope, RECEIVED, protocol=protocol, signals_topic=SIGNALS)
        session.flush()
        return result

    return run


def common(subject: str = "S-001", trial: str = "NCT07212335", sender: str = "m-1") -> dict[str, Any]:
    return {
        "id": deterministic_id("inbound", "edc", sender),
        "source": "/sources/edc",
        "subject": subject,
        "time": RECEIVED,
        "trialid": trial,
        "siteid": "SITE-1",
        "receivedat": RECEIVED,
        "senderid": sender,
    }


def enrolment(arm: str = "B", trial: str = "NCT07212335") -> SubjectEnrolled:
    data = EnrollmentData(arm=arm, enrolled_at=date(2026, 2, 1))
    return SubjectEnrolled(**common(trial=trial, sender=f"enrol-{arm}"), data=data)


def count(session: Session, model: Any) -> int:
    return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_enrolment_stores_the_subject_and_its_arm(apply: Any, session: Session) -> None:
    assert apply(enrolment("A")) == []  # the first arm: no predecessor to wait for (see test_protocol_engine)
    subject = session.get(Subject, ("NCT07212335", "S-001"))
    assert subject is not None
    assert (subject.arm, subject.site_id, subject.enrolled_at) == ("A", "SITE-1", date(2026, 2, 1))


def test_enrolment_in_an_unknown_arm_is_poison(apply: Any, session: Session) -> None:
    with pytest.raises(PoisonMessage, match="arm 'Z'"):
        apply(enrolment("Z"))
    assert count(session, Subject) == 0


def test_event_for_another_trial_is_poison(apply: Any, make_ae: Any, session: Session) -> None:
    with pytest.raises(PoisonMessage, match="NCT00000000"):
        apply(make_ae(trial="NCT00000000", seriousness={"hospitalization": True}))
    with pytest.raises(PoisonMessage):
        apply(enrolment("A", trial="NCT00000000"))
    assert count(session, AeVersion) == 0


def test_lab_and_dose_are_stored_once(apply: Any, session: Session) -> None:
    lab = LabResulted(
        **common(sender="lab-1"),
        data=LabData(result_id="R-1", test="NEUT", value="0.40", collected_at=RECEIVED - timedelta(hours=3)),
    )
    dose = DoseAdministered(
        **common(sender="dose-1"),
        data=DoseData(dose_id="D-1", number=1, administered_at=datetime(2026, 2, 2, 10, tzinfo=UTC)),
    )
    # No unit on an absolute count: stored ungraded, and the site hears of it once (a re-send says nothing).
    assert [o.envelope.data.code for o in apply(lab)] == ["unknown_unit"]
    # Dosed with no screening on record (no enrolment form, an unreadable count): the deviation, once.
    assert [o.envelope.data.kind for o in apply(dose)] == ["screening_data_missing"]
    assert apply(lab) == []
    assert apply(dose) == []
    assert count(session, LabResult) == 1
    assert count(session, Dose) == 1
    assert session.get(LabResult, ("NCT07212335", "S-001", "R-1")).value == "0.40"  # type: ignore[union-attr]
    assert count(session, Subject) == 1, "data before enrolment still creates the subject"


def test_non_serious_ae_is_stored_without_signal(apply: Any, make_ae: Any, session: Session) -> None:
    assert apply(make_ae(grade=2)) == []
    assert count(session, AeVersion) == 1


def test_ae_becoming_serious_emits_one_sae_detected(apply: Any, make_ae: Any) -> None:
    aware = datetime(2026, 3, 1, 7, 45, tzinfo=UTC)
    assert apply(make_ae(version=1, grade=2)) == []
    envelope = make_ae(version=2, grade=3, seriousness={"hospitalization": True}, awareness_at=aware)
    [outgoing] = apply(envelope)
    assert outgoing.topic == SIGNALS
    assert outgoing.key == b"NCT07212335:S-001"
    signal = outgoing.envelope
    assert isinstance(signal, SaeDetected)
    assert signal.source == SIGNAL_SOURCE
    assert signal.trialid == "NCT07212335"
    assert signal.data.awareness_at == aware
    assert signal.data.awareness_basis.value == "site"
    assert signal.data.criteria == ["hospitalization"]
    assert signal.data.ae_version == 2
    assert signal.data.source_event_id == envelope.id
    assert signal.id == deterministic_id("signal", envelope.id, "sae.detected")


def test_receipt_is_the_clock_when_the_site_gave_no_awareness(apply: Any, make_ae: Any) -> None:
    received = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    [outgoing] = apply(make_ae(seriousness={"disability": True}, received_at=received))
    assert outgoing.envelope.data.awareness_at == received  # type: ignore[attr-defined]
    assert outgoing.envelope.data.awareness_basis.value == "receipt"  # type: ignore[attr-defined]


def test_reapplying_the_same_version_changes_nothing_and_other_content_is_flagged(
    apply: Any, make_ae: Any, session: Session
) -> None:
    first = make_ae(seriousness={"hospitalization": True})
    assert len(apply(first)) == 1
    assert apply(make_ae(seriousness={"hospitalization": True}, sender_id="plain-redelivery")) == []
    resent = make_ae(seriousness={"hospitalization": True, "life_threatening": True}, sender_id="resent-under-new-id")
    assert resent.id != first.id
    [flag] = apply(resent)  # the first content stands; the site is told to send the change as a new version
    assert flag.envelope.type == "data_quality.flagged"
    assert flag.envelope.data.code == "conflicting_resend" and "life_threatening" in flag.envelope.data.detail
    assert count(session, AeVersion) == 1
    row = session.get(AeSeriousness, ("NCT07212335", "S-001", "AE-1"))
    assert row is not None and row.criteria == ["hospitalization"]


def test_worse_follow_up_emits_sae_updated_with_the_original_clock(apply: Any, make_ae: Any) -> None:
    aware = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
    apply(make_ae(version=1, seriousness={"hospitalization": True}, awareness_at=aware))
    [outgoing] = apply(
        make_ae(version=2, grade=4, seriousness={"hospitalization": True}, awareness_at=aware + timedelta(days=1))
    )
    signal = outgoing.envelope
    assert isinstance(signal, SaeUpdated)
    assert signal.data.grade == 4
    assert signal.data.awareness_at == aware


def test_identical_follow_up_emits_nothing(apply: Any, make_ae: Any, session: Session) -> None:
    apply(make_ae(version=1, seriousness={"hospitalization": True}))
    assert apply(make_ae(version=2, seriousness={"hospitalization": True})) == []
    assert count(session, AeVersion) == 2


def test_downgrading_follow_up_keeps_the_sae(apply: Any, make_ae: Any, session: Session) -> None:
    apply(make_ae(version=1, seriousness={"hospitalization": True}))
    assert apply(make_ae(version=2, serious=False, seriousness={})) == []
    row = session.get(AeSeriousness, ("NCT07212335", "S-001", "AE-1"))
    assert row is not None
    assert row.criteria == ["hospitalization"]
    assert row.latest_version == 2


def test_contradictory_version_is_stored_with_its_flag(apply: Any, make_ae: Any, session: Session) -> None:
    apply(make_ae(version=1, serious=False, seriousness={"hospitalization": True}))
    version = session.get(AeVersion, ("NCT07212335", "S-001", "AE-1", 1))
    assert version is not None
    assert len(version.flags) == 1 and version.flags[0].startswith("serious=false")


def test_serious_true_without_ticks_after_real_criteria_does_not_re_page(apply: Any, make_ae: Any) -> None:
    apply(make_ae(version=1, seriousness={"hospitalization": True}))
    out = apply(make_ae(version=2, serious=True))
    # no SAE re-page; the contradiction (serious without criteria) goes to the site as a data-quality finding
    assert [o.envelope.type for o in out] == ["data_quality.flagged"]


def test_signal_id_is_deterministic_across_replays(engine: Engine, protocol: Protocol, make_ae: Any) -> None:
    create_tables(engine, models.TABLES)
    envelope = make_ae(seriousness={"hospitalization": True})
    ids = []
    for _ in range(2):
        with Session(engine) as session:
            [outgoing] = apply_clinical_event(session, envelope, RECEIVED, protocol=protocol, signals_topic=SIGNALS)
            ids.append(outgoing.message_id)
            session.rollback()  # a replay from scratch: nothing was committed
    assert ids[0] == ids[1]


def test_state_survives_the_database_round_trip(engine: Engine, protocol: Protocol, make_ae: Any) -> None:
    """The second version is assessed against state read back from SQLite (aware datetimes, JSON criteria)."""
    create_tables(engine, models.TABLES)
    aware = datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    for version, grade in ((1, 3), (2, 4)):
        with Session(engine) as session, session.begin():
            envelope = make_ae(version=version, grade=grade, seriousness={"hospitalization": True}, awareness_at=aware)
            result = apply_clinical_event(session, envelope, RECEIVED, protocol=protocol, signals_topic=SIGNALS)
    [outgoing] = result
    assert isinstance(outgoing.envelope, SaeUpdated)
    assert outgoing.envelope.data.awareness_at == datetime(2026, 3, 1, 4, 30, tzinfo=UTC)
