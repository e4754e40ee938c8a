"""What an SAE signal means for people: deadline, recipients, ids, and the words of the mail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.notify.mail_content import sae_mail
from services.notify.sae_alerts import plan_sae_alert, report_deadline, update_needs_paging
from shared.protocol import Protocol, load_protocol

IST = timezone(timedelta(hours=5, minutes=30))


def test_deadline_is_awareness_plus_protocol_hours(make_sae: Any, protocol: Protocol) -> None:
    aware = datetime(2026, 3, 28, 22, 17, 3, tzinfo=UTC)
    plan = plan_sae_alert(make_sae(awareness_at=aware), protocol, reason="new SAE")
    assert plan.obligation.due_at == datetime(2026, 3, 29, 22, 17, 3, tzinfo=UTC)
    assert plan.obligation.clock_started_at == aware
    assert plan.obligation.clock_basis == "site"
    assert plan.obligation.kind == "sae_report"
    assert "24 h" in plan.obligation.description


def test_deadline_from_an_offset_awareness_is_the_same_instant_in_utc(make_sae: Any, protocol: Protocol) -> None:
    aware = datetime(2026, 3, 1, 10, 0, tzinfo=IST)
    plan = plan_sae_alert(make_sae(awareness_at=aware), protocol, reason="new SAE")
    assert plan.obligation.due_at == datetime(2026, 3, 2, 4, 30, tzinfo=UTC)
    assert plan.obligation.due_at.utcoffset() == timedelta(0)
    assert plan.obligation.clock_started_at == datetime(2026, 3, 1, 4, 30, tzinfo=UTC)


def test_deadline_follows_the_protocol_hours(make_sae: Any) -> None:
    base = load_protocol(None)
    protocol = base.model_copy(update={"sae": base.sae.model_copy(update={"report_within_hours": 7 * 24})})
    aware = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    plan = plan_sae_alert(make_sae(awareness_at=aware), protocol, reason="new SAE")
    assert plan.obligation.due_at == aware + timedelta(days=7)


def test_naive_awareness_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="naive"):
        report_deadline(datetime(2026, 3, 1, 8, 0), 24)


def test_recipients_come_from_the_protocol_roles(make_sae: Any, protocol: Protocol) -> None:
    plan = plan_sae_alert(make_sae(), protocol, reason="new SAE")
    assert [m.recipient for m in plan.messages] == [
        "medical.monitor@sentinel.example",
        "safety.officer@sentinel.example",
    ]
    only_officer = protocol.model_copy(
        update={"sae": protocol.sae.model_copy(update={"notify_roles": ["safety_officer"]})}
    )
    plan = plan_sae_alert(make_sae(), only_officer, reason="new SAE")
    assert [m.recipient for m in plan.messages] == ["safety.officer@sentinel.example"]


def test_ids_are_deterministic_and_threaded_by_ae(make_sae: Any, protocol: Protocol) -> None:
    first = plan_sae_alert(make_sae(signal_id="sig-1"), protocol, reason="new SAE")
    again = plan_sae_alert(make_sae(signal_id="sig-1"), protocol, reason="new SAE")
    follow_up = plan_sae_alert(make_sae(kind="updated", signal_id="sig-2", ae_version=2), protocol, reason="x")
    other_ae = plan_sae_alert(make_sae(signal_id="sig-3", ae_id="AE-2"), protocol, reason="new SAE")
    assert first == again
    assert follow_up.alert_id == first.alert_id
    assert follow_up.obligation.id == first.obligation.id
    assert {m.delivery_id for m in follow_up.messages}.isdisjoint(m.delivery_id for m in first.messages)
    assert other_ae.alert_id != first.alert_id
    assert first.thread_key == "sae:NCT07212335:S-001:AE-1"


@pytest.mark.parametrize(
    ("previous", "changes", "expected"),
    [
        ({"grade": 3, "criteria": ["hospitalization"]}, {"grade": 4}, "grade increased to 4"),
        ({"grade": None, "criteria": ["hospitalization"]}, {"grade": 2}, "grade increased to 2"),
        (
            {"grade": 3, "criteria": ["hospitalization"]},
            {"criteria": ["death", "hospitalization"]},
            "new seriousness criteria: death",
        ),
        ({"grade": 3, "criteria": ["hospitalization"]}, {}, None),
        ({"grade": 4, "criteria": ["hospitalization"]}, {"grade": 3}, None),
        ({"grade": 3, "criteria": ["hospitalization", "death"]}, {"criteria": ["hospitalization"]}, None),
        ({"grade": 3, "criteria": ["hospitalization"]}, {"grade": None}, None),
    ],
)
def test_update_needs_paging_only_when_worse(
    make_sae: Any, previous: dict[str, Any], changes: dict[str, Any], expected: str | None
) -> None:
    assert update_needs_paging(previous, make_sae(**changes).data) == expected


def test_mail_names_everything_the_officer_needs(make_sae: Any) -> None:
    data = make_sae(
        criteria=["hospitalization", "life_threatening"], awareness_at=datetime(2026, 3, 1, 6, 15, tzinfo=UTC)
    ).data
    due = datetime(2026, 3, 2, 6, 15, tzinfo=UTC)
    mail = sae_mail("NCT07212335", data, due_at=due, hours=24, reason="new SAE")
    assert "NCT07212335" in mail.subject
    assert "S-001" in mail.subject
    assert "2026-03-02 06:15 UTC" in mail.subject
    for expected in (
        "Trial: NCT07212335",
        "Site: SITE-1",
        "Subject: S-001",
        "Event: Febrile neutropenia (AE AE-1, version 1)",
        "CTCAE grade: 3",
        "Seriousness: hospitalization, life threatening",
        "Clock started: 2026-03-01 06:15 UTC (site awareness)",
        "Report due: 2026-03-02 06:15 UTC (24 h)",
        "new SAE",
    ):
        assert expected in mail.text
    assert "SITE-1" in mail.html and "2026-03-02 06:15 UTC" in mail.html


def test_mail_says_when_the_clock_started_at_receipt(make_sae: Any) -> None:
    data = make_sae(awareness_basis="receipt").data
    mail = sae_mail("NCT07212335", data, due_at=datetime(2026, 3, 2, 8, tzinfo=UTC), hours=24, reason="new SAE")
    assert "receipt (the site gave no awareness time)" in mail.text


def test_mail_html_escapes_site_text(make_sae: Any) -> None:
    data = make_sae(term="<script>alert(1)</script>").data
    mail = sae_mail("NCT07212335", data, due_at=datetime(2026, 3, 2, 8, tzinfo=UTC), hours=24, reason="new SAE")
    assert "<script>" not in mail.html
    assert "&lt;script&gt;" in mail.html


def test_mail_clock_start_from_an_offset_awareness_is_shown_in_utc(make_sae: Any, protocol: Protocol) -> None:
    signal = make_sae(awareness_at=datetime(2026, 3, 1, 10, 0, tzinfo=IST))
    plan = plan_sae_alert(signal, protocol, reason="new SAE")
    text = plan.messages[0].content.text
    assert "Report due: 2026-03-02 04:30 UTC" in text
    assert "Clock started: 2026-03-01 04:30 UTC" in text
