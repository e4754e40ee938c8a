"""safety_0014_c7_decided_event on SQLite and PostgreSQL: DLTs decided before it keep the decision they hold (a
suspicion with a decision on file was a rejection reopened: only a rejection could reopen then) and the term they
carry as the event decided on; undecided DLTs get neither."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData, Table, select

from shared.db import make_engine
from shared.db_migrations import upgrade
from tests.integration.test_decision_basis_migration import row
from tests.migration_steps import upgrade_to

pytestmark = pytest.mark.integration
BEFORE = "safety_0013_saecase_reentry"


def test_decisions_taken_before_the_revision_keep_their_decision_and_event(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        safety = upgrade_to(engine, "safety", BEFORE)
        dlts = Table("safety_dlts", MetaData(), autoload_with=engine)
        with engine.begin() as connection:
            connection.execute(
                dlts.insert(),
                [
                    row("confirmed-1", "confirmed", True),
                    row("rejected-1", "rejected", True),
                    row("reopened-1", "suspected", True),
                    row("suspected-1", "suspected", False),
                ],
            )
        upgrade([safety], engine)
        dlts = Table("safety_dlts", MetaData(), autoload_with=engine)
        with engine.connect() as connection:
            found = connection.execute(
                select(dlts.c.dlt_id, dlts.c.decided_state, dlts.c.decided_term).order_by(dlts.c.dlt_id)
            ).all()
        assert [tuple(r) for r in found] == [
            ("confirmed-1", "confirmed", "Pneumonitis"),
            ("rejected-1", "rejected", "Pneumonitis"),
            ("reopened-1", "rejected", "Pneumonitis"),
            ("suspected-1", None, None),
        ]
    finally:
        engine.dispose()
