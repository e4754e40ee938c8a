"""Pure: what a dead-lettered message means for people. An event that safety (or notify) could not process
may be a lost SAE, so it pages an owner, as an alert that escalates until someone acknowledges it.

- Identity: the record it was (source topic, partition, offset, from the DLQ headers that
  `shared.kafka.ConsumerLoop._dead_letter` writes; the DLQ record's own position if they are missing), so a
  re-delivered or re-dead-lettered record is one alert.
- Owner: the protocol's data managers / operators (roles below); plus the safety officer when the record
  could be an adverse event (an AE, SAE, DLT, lab or status change, or anything that cannot be read).
  A protocol without a data manager or operator sends it to escalation step 0's targets, never to nobody.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.notify.escalation import resolve_targets, step_targets
from services.notify.mail_content import MailContent, notice_mail
from services.notify.sae_alerts import AlertPlan, messages_to
from shared.events import deterministic_id
from shared.protocol import Protocol

DEAD_LETTER_KIND = "dead_letter"
OWNER_ROLES = ("data_manager", "operator")
SAFETY_ROLE = "safety_officer"
NOT_AN_AE = frozenset(
    {"subject.enrolled", "dose.administered", "cohort.decision", "assessment.missed", "protocol.deviation"}
)
"""Event types that cannot carry an adverse event; every other type, and an unreadable record, could."""
UNKNOWN = "unknown"


@dataclass(frozen=True)
class DeadLetter:
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    consumer: str
    error_type: str
    error: str
    event_id: str | None
    event_type: str | None
    trial_id: str | None
    site_id: str | None
    subject_id: str | None
    size: int

    @property
    def identity(self) -> str:
        if self.source_partition is not None and self.source_offset is not None:
            return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"
        return f"{self.dlq_topic}[{self.dlq_partition}]@{self.dlq_offset}"

    @property
    def could_be_ae(self) -> bool:
        return self.event_type not in NOT_AN_AE

    @property
    def error_summary(self) -> str:
        """The last line of a traceback (the exception and its message), or the reason as given."""
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return (lines[-1] if lines else self.error_type)[:500]


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", errors="replace")
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return str(value)[:200] if isinstance(value, str | int) and not isinstance(value, bool) and value != "" else None


def read_dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    headers: Sequence[tuple[str, bytes]],
    dlq_suffix: str = ".dlq",
) -> DeadLetter:
    """Never fails: whatever the bytes are (they failed once already), the person paged learns what we know."""
    envelope: Mapping[str, Any] = {}
    try:
        parsed = json.loads(value)
        if isinstance(parsed, dict):
            envelope = parsed
    except ValueError:
        pass
    raw_data = envelope.get("data")
    data: Mapping[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    key_trial, _, key_subject = (key or b"").decode("utf-8", errors="replace").partition(":")
    return DeadLetter(
        dlq_topic=topic,
        dlq_partition=partition,
        dlq_offset=offset,
        source_topic=_header(headers, "source_topic") or topic.removesuffix(dlq_suffix),
        source_partition=_int(_header(headers, "source_partition")),
        source_offset=_int(_header(headers, "source_offset")),
        consumer=_header(headers, "consumer") or UNKNOWN,
        error_type=_header(headers, "error_type") or UNKNOWN,
        error=(_header(headers, "error") or "no error was recorded with the message")[:4000],
        event_id=_text(envelope.get("id")),
        event_type=_text(envelope.get("type")),
        trial_id=_text(envelope.get("trialid")) or _text(key_trial),
        site_id=_text(data.get("site_id")) or _text(envelope.get("siteid")),
        subject_id=_text(data.get("subject_id")) or _text(key_subject) or _text(envelope.get("subject")),
        size=len(value),
    )


def dead_letter_thread_key(letter: DeadLetter) -> str:
    return f"{DEAD_LETTER_KIND}:{letter.identity}"


def owner_targets(protocol: Protocol, letter: DeadLetter) -> list[str]:
    owners = [role for role in OWNER_ROLES if protocol.contacts_with_role(role)]
    if not owners:
        owners = step_targets(protocol, 0)
    if letter.could_be_ae and SAFETY_ROLE not in owners:
        owners.append(SAFETY_ROLE)
    return owners


def dead_letter_mail(trial_id: str, letter: DeadLetter) -> MailContent:
    what = letter.event_type or "an unreadable message"
    ae = (
        "It could be an adverse event (possibly an SAE with a 24 h clock): check the source system for it now."
        if letter.could_be_ae
        else "It is not an adverse event, but the record it carries is missing from Sentinel."
    )
    rows = [
        ("Trial", letter.trial_id or trial_id),
        ("Site", letter.site_id or UNKNOWN),
        ("Subject", letter.subject_id or UNKNOWN),
        ("Event", f"{what} (id {letter.event_id or UNKNOWN})"),
        ("Rejected by", f"{letter.consumer}, reading {letter.identity}"),
        ("Error", f"{letter.error_type}: {letter.error_summary}"),
        ("Kept at", f"{letter.dlq_topic}[{letter.dlq_partition}]@{letter.dlq_offset} ({letter.size} bytes)"),
    ]
    return notice_mail(
        subject=f"[{trial_id}] Event not processed: {what}, subject {letter.subject_id or UNKNOWN}",
        heading=f"Sentinel accepted an event it could not process ({what}). {ae}",
        rows=rows,
        footer="Fix the cause, re-send the event from the source system, then acknowledge this alert; "
        "until then it escalates.",
    )


def plan_dead_letter(letter: DeadLetter, protocol: Protocol) -> AlertPlan:
    thread_key = dead_letter_thread_key(letter)
    content = dead_letter_mail(protocol.trial_id, letter)
    recipients = resolve_targets(protocol, owner_targets(protocol, letter))
    title = f"Event not processed: {letter.event_type or 'unreadable message'} ({letter.identity})"
    details: dict[str, object] = {
        "identity": letter.identity,
        "dlq": f"{letter.dlq_topic}[{letter.dlq_partition}]@{letter.dlq_offset}",
        "consumer": letter.consumer,
        "error_type": letter.error_type,
        "error": letter.error,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "event_trial_id": letter.trial_id,
        "could_be_ae": letter.could_be_ae,
        "owners": owner_targets(protocol, letter),
    }
    return AlertPlan(
        alert_id=deterministic_id("alert", thread_key),
        thread_key=thread_key[:500],
        title=title[:500],
        details=details,
        obligation=None,
        messages=messages_to(deterministic_id("dead-letter", letter.identity), recipients, content),
    )
