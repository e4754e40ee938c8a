"""Pure: what the pages show, computed from the APIs' JSON and `now`: clocks, inbox order, a subject's timeline.

Nothing here fetches or decides anything clinical; it only arranges what notify and safety said.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

OPEN_OBLIGATION_STATES = ("open", "overdue")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(value: object) -> str:
    """An instant as officers read it in mails too: '2026-03-01 14:05 UTC'."""
    moment = parse_time(value) if not isinstance(value, datetime) else value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def last_day(exclusive_end: object) -> str:
    """The last calendar day (UTC) of a window whose end is exclusive: what a coordinator calls its last day."""
    moment = parse_time(exclusive_end)
    return (moment - timedelta(microseconds=1)).date().isoformat() if moment else "—"


def duration(delta: timedelta) -> str:
    """Hours and minutes, as on the 24 h SAE clock: '23 h 05 min', '45 min', '3 d 2 h'."""
    minutes = int(abs(delta).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days >= 4:  # review clocks (72 h) read in hours, as the protocol states them
        return f"{days} d {hours} h"
    hours += days * 24
    return f"{hours} h {mins:02d} min" if hours else f"{mins} min"


@dataclass(frozen=True)
class Clock:
    due_at: datetime
    overdue: bool
    text: str
    """'23 h 05 min left' or 'overdue by 1 h 10 min'."""


def clock(due_at: datetime, now: datetime) -> Clock:
    left = due_at - now
    if left < timedelta(0):
        return Clock(due_at, True, f"overdue by {duration(left)}")
    return Clock(due_at, False, f"{duration(left)} left")


@dataclass
class InboxItem:
    alert: Mapping[str, Any]
    open_obligations: list[Mapping[str, Any]]
    clocks: dict[str, Clock]
    """obligation id -> its clock."""
    due_at: datetime | None
    pages: list[Mapping[str, Any]] = field(default_factory=list)
    """Who was paged and when: the alert's deliveries, newest first."""

    @property
    def last_paged(self) -> str:
        """'07:29 UTC: a@x, b@y' for the latest sent round: who was paged and when, at a glance."""
        sent = [d for d in self.pages if d.get("sent_at")]
        if not sent:
            return "not yet sent" if self.pages else "nobody paged"
        latest = str(sent[0]["sent_at"])
        recipients = sorted({str(d["recipient"]) for d in sent if str(d["sent_at"])[:16] == latest[:16]})
        return f"{when(latest)}: {', '.join(recipients)}"


def inbox(alerts: Iterable[Mapping[str, Any]], now: datetime) -> tuple[list[InboxItem], list[InboxItem]]:
    """Alerts not yet resolved: (with a deadline, soonest first; without one, newest first)."""
    timed: list[InboxItem] = []
    informational: list[InboxItem] = []
    for alert in alerts:
        if alert.get("state") == "resolved":
            continue
        open_ = [o for o in alert.get("obligations", []) if o.get("state") in OPEN_OBLIGATION_STATES]
        clocks = {}
        for obligation in open_:
            due = parse_time(obligation.get("due_at"))
            if due is not None:
                clocks[str(obligation["id"])] = clock(due, now)
        deadlines = [c.due_at for c in clocks.values()]
        pages = sorted(alert.get("deliveries", []), key=lambda d: str(d.get("sent_at") or ""), reverse=True)
        item = InboxItem(alert, open_, clocks, min(deadlines) if deadlines else None, pages)
        (timed if deadlines else informational).append(item)
    timed.sort(key=lambda i: (i.due_at or now, str(i.alert.get("id"))))
    informational.sort(key=lambda i: str(i.alert.get("created_at") or ""), reverse=True)
    return timed, informational


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    kind: str
    """enrolment | infusion | ae | lab | dlt | visit"""
    title: str
    detail: str
    grade: int | None = None
    in_window: bool = False
    flag: str = ""
    """A short word that needs attention: serious, DLT suspected, missed..."""


def _in(window: Mapping[str, Any] | None, moment: datetime) -> bool:
    if not window:
        return False
    start, end = parse_time(window.get("start")), parse_time(window.get("end"))
    return bool(start and end and start <= moment < end)


def timeline(subject: Mapping[str, Any], visits: Sequence[Mapping[str, Any]]) -> list[TimelineEvent]:
    """Enrolment, infusions, every AE version, labs, DLT reviews and visits, oldest first."""
    window = subject.get("dlt_window")
    events: list[TimelineEvent] = []
    enrolled = subject.get("enrolled_at")
    if enrolled:
        at = datetime.fromisoformat(f"{enrolled}T00:00:00+00:00")
        events.append(TimelineEvent(at, "enrolment", "Enrolled", f"arm {subject.get('arm') or 'not assigned'}"))
    for dose in subject.get("doses", []):
        at = parse_time(dose["administered_at"]) or datetime.min.replace(tzinfo=UTC)
        cells = f", {dose['cells_per_kg']} cells/kg" if dose.get("cells_per_kg") else ""
        events.append(TimelineEvent(at, "infusion", f"Infusion {dose['number']}", f"dose {dose['dose_id']}{cells}"))
    for ae in subject.get("adverse_events", []):
        for version in ae.get("versions", []):
            payload = version.get("payload", {})
            at = parse_time(version["received_at"]) or datetime.min.replace(tzinfo=UTC)
            grade = payload.get("grade")
            bits = [
                f"onset {payload.get('onset') or 'not given'}",
                f"relatedness {str(payload.get('relatedness') or 'not given').replace('_', ' ')}",
            ]
            if payload.get("outcome"):
                bits.append(f"outcome {payload['outcome']}")
            if version.get("flags"):
                bits.append("flags: " + ", ".join(version["flags"]))
            marks = payload.get("seriousness")
            serious = payload.get("serious") is True or (isinstance(marks, dict) and any(marks.values()))
            events.append(
                TimelineEvent(
                    at,
                    "ae",
                    f"{ae['ae_id']} v{version['version']}: "
                    f"{payload.get('term') or payload.get('ctcae_term') or 'term not given'}",
                    "; ".join(bits),
                    grade if isinstance(grade, int) else None,
                    _in(window, at),
                    "serious" if serious else (ae.get("status") or ""),
                )
            )
    for lab in subject.get("labs", []):
        at = parse_time(lab["collected_at"]) or datetime.min.replace(tzinfo=UTC)
        value = f"{lab['value']} {lab.get('unit') or ''}".strip()
        events.append(
            TimelineEvent(
                at,
                "lab",
                f"{lab.get('test') or lab.get('loinc')} {value}",
                lab.get("grade_reason") or "",
                lab.get("grade"),
                _in(window, at),
                "baseline" if lab.get("baseline") else "",
            )
        )
    for dlt in subject.get("dlts", []):
        at = parse_time(dlt["suspected_at"]) or datetime.min.replace(tzinfo=UTC)
        events.append(
            TimelineEvent(at, "dlt", f"DLT suspected: {dlt['term']}", dlt.get("reason") or "", dlt.get("grade"))
        )
        decided = parse_time(dlt.get("decided_at"))
        if decided is not None:
            events.append(
                TimelineEvent(
                    decided,
                    "dlt",
                    f"DLT {dlt['state']}: {dlt['term']}",
                    f"by {dlt.get('decided_by')}: {dlt.get('decision_reason') or ''}",
                    dlt.get("grade"),
                    flag=str(dlt["state"]),
                )
            )
    for visit in (v for v in visits if v.get("state") != "upcoming"):  # upcoming ones: the visits list
        at = parse_time(visit["due_from"]) or datetime.min.replace(tzinfo=UTC)
        missing = f"; missing {', '.join(visit['missing'])}" if visit.get("missing") else ""
        events.append(
            TimelineEvent(
                at,
                "visit",
                f"Visit {visit['name']}",
                f"window {when(visit['due_from'])} to {when(visit['due_until'])}{missing}",
                flag=str(visit["state"]),
                in_window=_in(window, at),
            )
        )
    kinds = ("enrolment", "infusion", "visit", "lab", "ae", "dlt")
    return sorted(events, key=lambda e: (e.at, kinds.index(e.kind)))


def relevant_labs(subject: Mapping[str, Any], dlt: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Labs an adjudicator weighs for a DLT: graded results inside its window, and any of the AE's own term."""
    window = {"start": dlt.get("window_start"), "end": dlt.get("window_end")}
    term = str(dlt.get("term") or "").casefold()
    found = []
    for lab in subject.get("labs", []):
        at = parse_time(lab.get("collected_at"))
        inside = at is not None and _in(window, at)
        same_term = bool(lab.get("term")) and str(lab["term"]).casefold() == term
        if same_term or (inside and (lab.get("grade") or 0) >= 1) or lab.get("baseline"):
            found.append(lab)
    return found


def onset_placement(
    dlt: Mapping[str, Any], onset: object, *, window: Mapping[str, Any] | None, first_number: int
) -> str:
    """Where the AE's onset sits in the DLT window, in the study days safety counts (the subject's window view:
    the site's dates and the protocol's day count), so the page says what the DLT's own reason says."""
    start, end = parse_time(dlt.get("window_start")), parse_time(dlt.get("window_end"))
    if start is None or end is None:
        return "no DLT window yet (no first infusion on record)"
    span = f"{when(start)} to {when(end)}"
    try:
        first = date.fromisoformat(str((window or {})["first_day"]))
        last = date.fromisoformat(str((window or {})["last_day"]))
    except (KeyError, TypeError, ValueError):
        return f"onset {onset or 'not given'}: window {span}"
    number = first_number  # the anchor day's number: 0 or 1, as the protocol counts
    last_number = number + (last - first).days
    if not isinstance(onset, str) or len(onset) < 10:
        return f"onset {onset or 'not given'}: window study days {number}-{last_number} ({span})"
    try:
        day = number + (date.fromisoformat(onset[:10]) - first).days
    except ValueError:
        return f"onset {onset}: window {span}"
    where = "inside" if number <= day <= last_number else "outside"
    return f"onset {onset[:10]} is study day {day} (window: days {number}-{last_number}): {where} the window ({span})"


HIDDEN_DETAILS = {"subject_id", "site_id", "source_event_id", "sequence", "withdrawn_through", "withdrawn_received_at"}
"""Shown elsewhere on the page, or bookkeeping (a lab signal's number) that means nothing to the officer."""
WORDED_DETAILS = {"relatedness", "awareness_basis", "decision", "previous_decision", "criteria"}
SHOWN_RESULT_REPEATS = {"standing_result_id", "withdrawn_result_id"}
"""A withdrawal's result ids: worth a row only when they name a result other than the one the alert shows (a lab
result revised within its grade is withdrawn, standing and shown at once)."""


def detail_rows(details: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An alert's facts as label/text rows: times in UTC, lists joined, codes in words, empty ones left out."""
    rows = []
    for key, value in details.items():
        if key in HIDDEN_DETAILS or value is None or value == [] or value == "":
            continue
        if key in SHOWN_RESULT_REPEATS and value == details.get("result_id"):
            continue
        if key.endswith("_at") or key in ("window_start", "window_end", "due_from", "due_until"):
            text = when(value)
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            text = ", ".join(f"{k}: {v}" for k, v in value.items() if v)
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = str(value)
        if key in WORDED_DETAILS:
            text = text.replace("_", " ")
        rows.append((key.replace("_", " ").capitalize().replace("Ae ", "AE ").replace("Dlt", "DLT"), text))
    return rows
