"""`new_row` builds the same row as a table model's constructor, for the ORM and for pydantic alike."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from services.safety.models import AeSeriousness, LabResult
from shared.audit import AuditEntry
from shared.db import create_tables, make_engine
from shared.rows import new_row

ROOT = Path(__file__).resolve().parents[3]
AT = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
LAB = {
    "trial_id": "T1",
    "subject_id": "101-0001",
    "result_id": "R1",
    "test": "HGB",
    "value": "68",
    "unit": "g/L",
    "collected_at": AT,
    "term": "Anemia",
    "grade": 3,
}


def _fields(row: object) -> dict[str, object]:
    return {k: v for k, v in vars(row).items() if not k.startswith("_sa_")}


def test_same_values_defaults_and_fields_set_as_the_constructor() -> None:
    built, constructed = new_row(LabResult, **LAB), LabResult(**LAB)  # type: ignore[arg-type]
    assert _fields(built) == _fields(constructed)
    assert built.model_fields_set == constructed.model_fields_set == set(LAB)
    assert built.grade_floor is False and built.grade_reason == "" and built.lln is None  # the model's defaults
    assert built.model_dump() == constructed.model_dump()


def test_default_factories_run_per_row() -> None:
    first = new_row(AeSeriousness, trial_id="T1", subject_id="101-0001", ae_id="AE-1", latest_version=1)
    second = new_row(AeSeriousness, trial_id="T1", subject_id="101-0001", ae_id="AE-2", latest_version=1)
    assert first.criteria == [] and first.criteria is not second.criteria
    first.criteria.append("hospitalization")
    assert second.criteria == []


def test_inserted_changed_and_read_back_like_a_constructed_row(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    create_tables(engine, [LabResult, AuditEntry])
    with Session(engine) as session:
        session.add(new_row(LabResult, **LAB))
        session.add(LabResult(**{**LAB, "result_id": "R2"}))  # type: ignore[arg-type]
        session.commit()
    with Session(engine) as session:
        stored = {row.result_id: _fields(row) for row in session.exec(select(LabResult))}
        assert stored["R1"] == {**stored["R2"], "result_id": "R1"}
        row = session.get(LabResult, ("T1", "101-0001", "R1"))
        assert row is not None
        row.grade = 4  # a change after loading is tracked as usual
        session.commit()
    with Session(engine) as session:
        pending = new_row(LabResult, **{**LAB, "result_id": "R3"})
        session.add(pending)
        pending.grade = 2  # and so is a change before the insert
        session.commit()
        grades = {row.result_id: row.grade for row in session.exec(select(LabResult))}
    assert grades == {"R1": 4, "R2": 3, "R3": 2}
    engine.dispose()


def test_a_name_that_is_no_field_or_a_missing_required_field_is_refused() -> None:
    with pytest.raises(TypeError, match="has no field gradee"):
        new_row(LabResult, **LAB, gradee=3)
    with pytest.raises(TypeError, match="value is required"):
        new_row(LabResult, **{k: v for k, v in LAB.items() if k != "value"})


def test_the_first_row_of_a_process_is_usable(tmp_path: Path) -> None:
    """Mappers are configured when the first row is built (SQLModel's constructor does it; so must new_row)."""
    script = """
from datetime import UTC, datetime
from sqlalchemy.orm import make_transient_to_detached
from services.safety.models import LabResult
from shared.rows import new_row
row = new_row(LabResult, trial_id="T", subject_id="S", result_id="R", value="7", collected_at=datetime.now(UTC))
make_transient_to_detached(row)
row.grade = 2
print(row.grade)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
