"""Safety's state as Prometheus gauges, counted in the database at scrape time.

Counted from state rather than incremented in the consumer, so a rolled-back or replayed transaction can
never inflate them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from services.safety.models import DltRecord, LabResult


class SafetyStateCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labs = GaugeMetricFamily(
            "sentinel_safety_lab_grades",
            "Stored lab results by CTCAE grade ('none': could not be graded, see the reason)",
            labels=["trial", "grade"],
        )
        dlts = GaugeMetricFamily(
            "sentinel_safety_dlts", "DLT records by arm and state", labels=["trial", "arm", "state"]
        )
        with Session(self._engine) as session:
            for trial, grade, count in session.exec(
                select(LabResult.trial_id, LabResult.grade, func.count()).group_by(
                    col(LabResult.trial_id), col(LabResult.grade)
                )
            ).all():
                labs.add_metric([trial, "none" if grade is None else str(grade)], count)
            for trial, arm, state, count in session.exec(
                select(DltRecord.trial_id, DltRecord.arm, DltRecord.state, func.count()).group_by(
                    col(DltRecord.trial_id), col(DltRecord.arm), col(DltRecord.state)
                )
            ).all():
                dlts.add_metric([trial, arm or "unassigned", state], count)
        yield labs
        yield dlts
