"""notify_0004_finding on SQLite and PostgreSQL: the deliveries classed critical before it (-1) stay critical under the
new number (-2), sent or pending, so a pending SAE page does not drop below the new live-finding class; the rest keep
their class."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData, Table, select

from services.notify import urgency
from shared.db import make_engine
from shared.db_migrations import upgrade
from tests.migration_steps import upgrade_to

pytestmark = pytest.mark.integration
BEFORE = "notify_0003_ops"
AT = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)


def test_critical_deliveries_stay_critical(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        notify = upgrade_to(engine, "notify", BEFORE)
        metadata = MetaData()
        alerts = Table("notify_alerts", metadata, autoload_with=engine)
        deliveries = Table("notify_deliveries", metadata, autoload_with=engine)
        with engine.begin() as connection:
            connection.execute(alerts.insert(), [alert_row()])
            connection.execute(
                deliveries.insert(),
                [
                    delivery_row("sae-pending", -1, "pending"),
                    delivery_row("sae-sent", -1, "sent"),
                    delivery_row("page", 0, "pending"),
                    delivery_row("digest", 2, "pending"),
                ],
            )
        upgrade([notify], engine)
        with engine.connect() as connection:
            found = dict(connection.execute(select(deliveries.c.id, deliveries.c.urgency)).all())
        assert found == {
            "sae-pending": urgency.CRITICAL,
            "sae-sent": urgency.CRITICAL,
            "page": urgency.PAGE,
            "digest": urgency.DIGEST,
        }
    finally:
        engine.dispose()


def alert_row() -> dict[str, object]:
    return {
        "id": "alert-1",
        "thread_key": "sae:T:A-1:AE-1",
        "kind": "sae",
        "trial_id": "T",
        "site_id": "101",
        "subject_id": "A-1",
        "title": "SAE",
        "details": {},
        "state": "open",
        "escalation_round": 0,
        "escalation_step": 0,
        "created_at": AT,
        "updated_at": AT,
    }


def delivery_row(delivery_id: str, level: int, status: str) -> dict[str, object]:
    return {
        "id": delivery_id,
        "alert_id": "alert-1",
        "channel": "email",
        "recipient": "officer@example.org",
        "subject": "s",
        "body_text": "t",
        "body_html": "h",
        "status": status,
        "urgency": level,
        "attempts": 0,
        "next_attempt_at": AT,
        "created_at": AT,
    }
