"""Safety's batch on PostgreSQL, where it writes most new rows by COPY: the same stream ends in the same state as
one event per transaction on SQLite (the ORM's own INSERTs), rows written by COPY mid-batch included (an enrolment
settles the subjects before it, which flushes) and corrected later in the same batch."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlmodel import Session, select

from services.safety.models import LabResult
from shared.db import make_engine
from shared.events import ClinicalEnvelope
from shared.protocol import Protocol, load_protocol
from tests.unit.safety.clinical import Driver, dose, enrol, lab
from tests.unit.safety.test_batch_settle import apply_in_batches, final_state
from tests.unit.safety.test_clinical_rules import DAY0, at

SUBJECTS = [f"{arm}-{n:02d}" for arm in ("A", "B") for n in range(15)]


def stream() -> list[ClinicalEnvelope]:
    """Thirty subjects, interleaved: an enrolment, baselines, an infusion and results each (dozens of rows per
    table); then one more enrolment (which settles, so flushes, the others mid-batch) and a correction of a result
    stored before it."""
    streams: list[list[ClinicalEnvelope]] = []
    for s in SUBJECTS:
        streams.append(
            [
                enrol(s, s[0], DAY0),
                lab(s, result_id=f"{s}-N0", test="NEUT", value="0.9", lln="2.0", collected_at=at(-2), baseline=True),
                lab(s, result_id=f"{s}-P0", test="PLAT", value="25", collected_at=at(-2), baseline=True),
                dose(s, at(0)),
                *(
                    lab(
                        s,
                        result_id=f"{s}-N{day}",
                        test="NEUT",
                        value="0.4" if s.endswith("3") else "2.5",
                        lln="2.0",
                        collected_at=at(day),
                    )
                    for day in (7, 14)
                ),
            ]
        )
    events = [stream[i] for i in range(len(streams[0])) for stream in streams]  # sites posting at once
    events.append(enrol("A-99", "A", DAY0))
    correction = lab("A-01", result_id="A-01-N7", test="NEUT", value="0.3", lln="2.0", collected_at=at(7))
    events.append(correction.model_copy(update={"id": "correction-A-01-N7"}))
    return events


def labs(driver: Driver) -> list[tuple[str, str, str, int | None]]:
    with Session(driver.engine) as session:
        return sorted((r.subject_id, r.result_id, r.value, r.grade) for r in session.exec(select(LabResult)))


def test_a_batch_on_postgresql_ends_where_one_event_per_transaction_on_sqlite_ends(
    postgres_url: str, tmp_path: Path
) -> None:
    protocol: Protocol = load_protocol(None)
    events = stream()
    now = at(20)
    reference = Driver(make_engine(f"sqlite:///{tmp_path / 'one-by-one.db'}"), protocol)
    reference.apply_all(events, now=now)

    engine = make_engine(postgres_url)
    inserts: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: inserts.append(statement))
    batched = Driver(engine, protocol)
    apply_in_batches(batched, events, [len(events)], now=now)

    assert not [s for s in inserts if s.startswith("INSERT INTO safety_labs")], "the batch's labs went by COPY"
    assert final_state(batched.engine) == final_state(reference.engine)
    assert labs(batched) == labs(reference)
    corrected = [row for row in labs(batched) if row[1] == "A-01-N7"]
    assert corrected == [("A-01", "A-01-N7", "0.3", corrected[0][3])] and corrected[0][3] == 4  # ANC < 0.5: grade 4
    engine.dispose()
