"""Bulk inserts on SQLite and PostgreSQL: COPY on PostgreSQL gives the same rows, the same errors and the same
ORM state as the INSERT it replaces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, inspect
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.safety.models import LabResult
from shared.bulk_insert import COPY_FROM_ROWS, copy_new_rows_on_flush, insert_rows
from shared.db import create_tables, make_engine
from shared.inbox import Claim, ProcessedEvent, add_claims, already_processed
from shared.rows import new_row

AT = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
MANY = COPY_FROM_ROWS * 3


def _lab(n: int, **changes: Any) -> LabResult:
    values: dict[str, Any] = {
        "trial_id": "T1",
        "subject_id": f"101-{n % 7:04d}",
        "result_id": f"R{n}",
        "test": "HGB",
        "value": str(60 + n),
        "unit": "g/L",
        "lln": "120",
        "uln": None,
        "collected_at": AT + timedelta(hours=n),
        "baseline": n % 5 == 0,
        "anticoagulated": None,
        "term": "Anemia",
        "grade": 3,
        "grade_reason": f"Hb {60 + n} g/L: grade 3 (< 80 g/L)",
    }
    return new_row(LabResult, **(values | changes))


def _statements(engine: Any) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement))
    return seen


@pytest.mark.parametrize("count", [3, MANY])
def test_claims_are_stored_and_found(database_url: str, count: int) -> None:
    engine = make_engine(database_url)
    create_tables(engine, [ProcessedEvent])
    claims = [Claim(f"e{n}", "clinical", n % 3, n) for n in range(count)]
    with Session(engine) as session, session.begin():
        add_claims(session, consumer="safety", claims=claims, now=AT)
    with Session(engine) as session:
        assert already_processed(session, consumer="safety", event_ids=[c.event_id for c in claims]) == {
            c.event_id for c in claims
        }
        stored = session.exec(select(ProcessedEvent).where(ProcessedEvent.event_id == "e1")).one()
        assert (stored.topic, stored.partition, stored.offset, stored.processed_at) == ("clinical", 1, 1, AT)
    engine.dispose()


def test_a_claim_already_taken_fails_the_batch_with_an_integrity_error(database_url: str) -> None:
    """What the consumers treat as transient (another replica claimed it): retried, then found processed."""
    engine = make_engine(database_url)
    create_tables(engine, [ProcessedEvent])
    with Session(engine) as session, session.begin():
        add_claims(session, consumer="safety", claims=[Claim("e7", "clinical", 0, 7)], now=AT)
    claims = [Claim(f"e{n}", "clinical", 0, n) for n in range(MANY)]
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        add_claims(session, consumer="safety", claims=claims, now=AT)
    with Session(engine) as session:  # nothing of the failed batch stayed
        assert session.exec(select(func.count()).select_from(ProcessedEvent)).one() == 1
    engine.dispose()


def test_new_rows_written_on_flush_stay_in_the_session_and_take_later_changes(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, [LabResult])
    statements = _statements(engine)
    with Session(engine) as session, session.begin():
        copy_new_rows_on_flush(session, [LabResult])
        rows = [_lab(n) for n in range(MANY)]
        session.add_all(rows)
        session.flush()
        inserts = [s for s in statements if s.startswith("INSERT INTO safety_labs")]
        if engine.dialect.name == "postgresql":
            assert inserts == []  # by COPY
        else:
            assert inserts
        assert session.get(LabResult, ("T1", "101-0003", "R3")) is rows[3]  # in the identity map, no query
        rows[3].grade = 4  # a correction after the rows were written: an UPDATE, as for any stored row
        session.add(_lab(MANY, result_id="late"))  # one more, below the COPY size: the ORM's own INSERT
    with Session(engine) as session:
        stored = {row.result_id: row for row in session.exec(select(LabResult))}
    assert len(stored) == MANY + 1
    assert stored["R3"].grade == 4 and stored["R4"].grade == 3
    assert (
        stored["R5"].baseline is True
        and stored["R5"].uln is None
        and stored["R5"].collected_at == AT + timedelta(hours=5)
    )
    assert stored["R2"].grade_reason == "Hb 62 g/L: grade 3 (< 80 g/L)"
    engine.dispose()


def test_new_rows_written_on_flush_leave_the_session_when_the_transaction_rolls_back(database_url: str) -> None:
    """As rows the ORM inserted would: a batch retried after a failure must not find the failed try's rows."""
    engine = make_engine(database_url)
    create_tables(engine, [LabResult])
    with Session(engine) as session:
        copy_new_rows_on_flush(session, [LabResult])
        with session.begin():
            rows = [_lab(n) for n in range(MANY)]
            session.add_all(rows)
            session.flush()
            assert all(inspect(row).persistent for row in rows)
            session.rollback()
        assert all(inspect(row).transient for row in rows)
        assert session.get(LabResult, ("T1", "101-0003", "R3")) is None
    engine.dispose()


def test_rows_of_other_tables_or_too_few_go_by_insert(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, [LabResult, ProcessedEvent])
    with Session(engine) as session, session.begin():
        copy_new_rows_on_flush(session, [LabResult])
        session.add_all([_lab(n) for n in range(COPY_FROM_ROWS - 1)])
        insert_rows(session.connection(), ProcessedEvent.__table__, [])  # type: ignore[attr-defined]
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(LabResult)).one() == COPY_FROM_ROWS - 1
    engine.dispose()


def test_a_new_row_without_a_columns_value_is_refused_not_copied_without_it(database_url: str) -> None:
    """COPY writes what each row holds: a row missing a column's value must fail, not store the column's default."""
    engine = make_engine(database_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("COPY is PostgreSQL's")
    create_tables(engine, [LabResult])
    with Session(engine) as session, session.begin():
        copy_new_rows_on_flush(session, [LabResult])
        rows = [_lab(n) for n in range(MANY)]
        del rows[-1].__dict__["grade_reason"]
        session.add_all(rows)
        with pytest.raises(ValueError, match="lacks a column's value"):
            session.flush()
        session.rollback()
    engine.dispose()
