"""Labs in safety: graded and stored; a page only at the protocol threshold and worse than the baseline."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from services.safety import models
from services.safety.clinical_events import apply_clinical_event
from services.safety.ctcae import Grade
from services.safety.lab_toxicity import decide
from services.safety.models import LabResult
from shared.db import create_tables
from shared.events import LabData, LabResulted, LabToxicity, deterministic_id
from shared.outbox import Outgoing
from shared.protocol import LabAlerts, Protocol

SIGNALS = "test.signals.v1"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def graded(grade: int | None) -> Grade:
    return Grade("Neutrophil count decreased", grade, "reason", None, None)


@pytest.mark.parametrize(
    ("grade", "baseline", "signalled", "threshold", "pages"),
    [
        (3, None, None, 3, True),  # no baseline known: graded against normal
        (2, None, None, 3, False),  # below the protocol threshold
        (4, 4, None, 3, False),  # as bad as at entry: these subjects enter with grade 4 cytopenia
        (4, 3, None, 3, True),  # worse than baseline
        (4, 3, 4, 3, False),  # already signalled at this grade
        (4, 0, 3, 3, True),  # worsened since the last signal
        (None, None, None, 3, False),  # not gradable: stored with its reason, never a page
    ],
)
def test_decide(grade: int | None, baseline: int | None, signalled: int | None, threshold: int, pages: bool) -> None:
    decision = decide(
        graded(grade), is_baseline=False, threshold=threshold, baseline_grade=baseline, signalled_grade=signalled
    )
    assert decision.signal is pages


def test_baseline_results_never_page() -> None:
    assert not decide(graded(4), is_baseline=True, threshold=1, baseline_grade=None, signalled_grade=None).signal


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    create_tables(engine, models.TABLES)
    with Session(engine) as session, session.begin():
        yield session


def lab(
    n: int, test: str, value: object, unit: str, *, lln: str, uln: str, hours: int, baseline: bool = False
) -> LabResulted:
    sender = f"lab-{n}"
    return LabResulted(
        id=deterministic_id("inbound", "edc", sender),
        source="/sources/edc",
        subject="S-001",
        time=T0,
        trialid="NCT07212335",
        siteid="SITE-1",
        receivedat=T0 + timedelta(hours=hours),
        senderid=sender,
        data=LabData(
            result_id=f"R-{n}",
            test=test,
            value=value,
            unit=unit,
            lln=Decimal(lln),
            uln=Decimal(uln),
            collected_at=T0 + timedelta(hours=hours),
            baseline=baseline,
        ),
    )


def run(session: Session, protocol: Protocol, envelope: LabResulted) -> Sequence[Outgoing]:
    out = apply_clinical_event(session, envelope, T0, protocol=protocol, signals_topic=SIGNALS)
    session.flush()
    return out


def test_cytopenic_subject_pages_only_when_worse_than_baseline(session: Session, protocol: Protocol) -> None:
    assert run(session, protocol, lab(1, "PLAT", "40", "10^9/L", lln="150", uln="400", hours=0, baseline=True)) == []
    assert run(session, protocol, lab(2, "PLAT", "30", "10^9/L", lln="150", uln="400", hours=24)) == []  # 3 = 3
    out = run(session, protocol, lab(3, "PLAT", "20", "K/uL", lln="150", uln="400", hours=48))
    assert len(out) == 1
    signal = out[0].envelope
    assert isinstance(signal, LabToxicity)
    assert (signal.data.term, signal.data.grade, signal.data.baseline_grade) == ("Platelet count decreased", 4, 3)
    assert out[0].key == b"NCT07212335:S-001"
    assert run(session, protocol, lab(4, "PLAT", "10", "10^9/L", lln="150", uln="400", hours=72)) == []  # still 4

    stored = session.get(LabResult, ("NCT07212335", "S-001", "R-3"))
    assert stored is not None
    assert (stored.term, stored.grade) == ("Platelet count decreased", 4)
    assert "25" in stored.grade_reason


def test_every_lab_is_stored_with_grade_or_reason(session: Session, protocol: Protocol) -> None:
    assert run(session, protocol, lab(1, "NEUT", "45", "%", lln="40", uln="75", hours=0)) == []
    stored = session.get(LabResult, ("NCT07212335", "S-001", "R-1"))
    assert stored is not None
    assert stored.grade is None
    assert "percentage" in stored.grade_reason


def test_liver_rule_uses_the_subjects_baseline_value(session: Session, protocol: Protocol) -> None:
    """ALT with an abnormal baseline is graded against the baseline, not the ULN (CTCAE v5.0)."""
    run(session, protocol, lab(1, "ALT", "100", "U/L", lln="7", uln="40", hours=0, baseline=True))
    out = run(session, protocol, lab(2, "ALT", "260", "U/L", lln="7", uln="40", hours=24))
    stored = session.get(LabResult, ("NCT07212335", "S-001", "R-2"))
    assert stored is not None
    assert stored.grade == 1, stored.grade_reason  # 2.6 x baseline; against ULN it would be grade 3
    assert out == []


def test_threshold_per_term_comes_from_the_protocol(session: Session, protocol: Protocol) -> None:
    stricter = protocol.model_copy(update={"lab_alerts": LabAlerts(min_grade=3, term_min_grade={"Hyperkalemia": 2})})
    assert len(run(session, stricter, lab(1, "K", "5.8", "mmol/L", lln="3.5", uln="5.1", hours=0))) == 1
    assert run(session, protocol, lab(2, "K", "5.9", "mmol/L", lln="3.5", uln="5.1", hours=1)) == []


def test_re_sent_result_is_not_graded_twice(session: Session, protocol: Protocol) -> None:
    first = lab(1, "PLAT", "20", "10^9/L", lln="150", uln="400", hours=0)
    assert len(run(session, protocol, first)) == 1
    resent = first.model_copy(update={"id": deterministic_id("inbound", "edc", "other-delivery")})
    assert run(session, protocol, resent) == []
