"""Which lane a signal takes (shared.lanes): the routine kinds a backfill raises by the hundred on their own topic,
the case and decision signals on the signals topic notify drains first; each kind on one lane only."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

from shared.events import AssessmentMissed, AssessmentMissedData, SignalEnvelope
from shared.lanes import ROUTINE_SIGNALS, routine_topic, signal_topic
from shared.outbox import Outgoing, outbox_row

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
