"""Which lane a signal takes (shared.lanes): the routine kinds a backfill raises by the hundred on their own topic,
the case and decision signals on the signals topic notify drains first; each kind on one lane only."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

from shared.events import AssessmentMissed, AssessmentMissedData, SignalEnvelope
from shared.lanes import LIVE_URGENT_SIGNALS, ROUTINE_SIGNALS, bulk_topic, is_bulk, routine_topic, signal_topic
from shared.outbox import Outgoing, outbox_row
from tests.signal_factories import grade4_platelets

SIGNALS = "sentinel.signals.v1"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def signal_types() -> set[str]:
    union = typing.get_args(SignalEnvelope)[0]
    return {typing.get_args(model.model_fields["type"].annotation)[0] for model in typing.get_args(union)}


def test_the_routine_lane_holds_only_known_signal_types_and_never_a_case_or_decision() -> None:
    types = signal_types()
    assert types >= ROUTINE_SIGNALS
    urgent = types - ROUTINE_SIGNALS
    for prefix in ("sae.", "susar.", "dlt.", "acute_reaction.", "cohort.", "stopping_rule.", "dose."):
        assert any(t.startswith(prefix) for t in urgent), prefix
        assert not any(t.startswith(prefix) for t in ROUTINE_SIGNALS), prefix


def test_a_kind_takes_one_lane_whatever_else_it_carries() -> None:
    """Notify keeps a thread per kind: a kind split over two lanes could see its signals out of order."""
    for kind in {t.split(".")[0] for t in signal_types()}:
        lanes = {t in ROUTINE_SIGNALS for t in signal_types() if t.split(".")[0] == kind}
        assert len(lanes) == 1, kind


def test_the_outbox_puts_each_signal_on_its_lane() -> None:
    data = AssessmentMissedData(
        site_id="101", subject_id="101-001", assessment="day 14", due_from=NOW, due_until=NOW, missing=["lab"]
    )
    missed = AssessmentMissed(id="s-1", source="/services/safety", subject="101-001", time=NOW, trialid="T", data=data)
    row = outbox_row(producer="safety", message=Outgoing(topic=SIGNALS, key=b"k", envelope=missed), now=NOW)
    assert row["topic"] == routine_topic(SIGNALS) == "sentinel.signals.v1.routine"
    assert signal_topic(SIGNALS, object()) == SIGNALS, "anything that is not a routine signal keeps its topic"


def test_a_lab_toxicity_raised_by_a_result_entered_on_its_own_takes_the_signals_topic() -> None:
    """A grade 4 count a site has just entered must page within seconds, not after a backfill's lab signals."""
    message = Outgoing(topic=SIGNALS, key=b"k", envelope=grade4_platelets(1, at=NOW))
    assert outbox_row(producer="safety", message=message, now=NOW, live=True)["topic"] == SIGNALS
    assert outbox_row(producer="safety", message=message, now=NOW)["topic"] == routine_topic(SIGNALS)


def test_only_a_lab_toxicity_changes_lane_by_origin() -> None:
    """Other routine kinds keep one lane (their notify threads rely on the order within it)."""
    assert LIVE_URGENT_SIGNALS == {"lab.toxicity"} <= ROUTINE_SIGNALS
    data = AssessmentMissedData(
        site_id="101", subject_id="101-001", assessment="day 14", due_from=NOW, due_until=NOW, missing=["lab"]
    )
    missed = AssessmentMissed(id="s-1", source="/services/safety", subject="101-001", time=NOW, trialid="T", data=data)
    assert signal_topic(SIGNALS, missed, live=True) == routine_topic(SIGNALS)


def test_a_record_from_a_bulk_or_routine_lane_is_not_urgent_by_origin() -> None:
    assert is_bulk(bulk_topic("sentinel.clinical.v1")) and is_bulk(routine_topic(SIGNALS))
    assert not is_bulk("sentinel.clinical.v1") and not is_bulk(SIGNALS)
