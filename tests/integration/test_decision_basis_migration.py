"""safety_0012_p5_basis on SQLite and PostgreSQL: DLTs decided before it keep the relatedness they carry and are
taken to have met a criterion, so a confirmed DLT whose data already meet none is told once after the upgrade;
undecided DLTs get no decision basis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData, Table, select

from shared.db import make_engine
from shared.db_migrations import upgrade
from tests.migration_steps import upgrade_to

pytestmark = pytest.mark.integration
BEFORE = "safety_0011_susarclock"
AT = datetime(2026, 3, 12, 9, tzinfo=UTC)


def row(dlt_id: str, state: str, decided: bool) -> dict[str, object]:
    return {
        "dlt_id": dlt_id,
        "trial_id": "NCT07212335",
        "subject_id": "A-1",
        "ae_id": dlt_id,
        "state": state,
        "term": "Pneumonitis",
        "grade": 3,
        "relatedness": "not_related",
        "ae_version": 2,
        "reason": "meets no DLT criterion",
        "suspected_at": AT,
        "updated_at": AT,
        "revision": 2,
        "decided_by": "olga" if decided else None,
        "decided_at": AT if decided else None,
    }


def test_decisions_taken_before_the_revision_get_the_basis_we_know(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        safety = upgrade_to(engine, "safety", BEFORE)
        dlts = Table("safety_dlts", MetaData(), autoload_with=engine)
        with engine.begin() as connection:
            connection.execute(
                dlts.insert(), [row("confirmed-1", "confirmed", True), row("withdrawn-1", "withdrawn", False)]
            )
        upgrade([safety], engine)
        dlts = Table("safety_dlts", MetaData(), autoload_with=engine)
        with engine.connect() as connection:
            found = connection.execute(
                select(dlts.c.dlt_id, dlts.c.decided_relatedness, dlts.c.decided_met, dlts.c.divergence).order_by(
                    dlts.c.dlt_id
                )
            ).all()
        assert [tuple(r) for r in found] == [
            ("confirmed-1", "not_related", True, None),
            ("withdrawn-1", None, None, None),
        ]
    finally:
        engine.dispose()
