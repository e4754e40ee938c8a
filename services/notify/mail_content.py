"""Pure: the words of an SAE mail, in plain text and HTML, naming everything a safety officer needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from shared.clock import utc
from shared.events import LabToxicityData, SaeData


@dataclass(frozen=True)
class MailContent:
    subject: str
    text: str
    html: str


def _when(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def sae_mail(trial_id: str, data: SaeData, *, due_at: datetime, hours: int, reason: str) -> MailContent:
    criteria = ", ".join(c.replace("_", " ") for c in data.criteria)
    basis = "site awareness" if data.awareness_basis.value == "site" else "receipt (the site gave no awareness time)"
    rows = [
        ("Trial", trial_id),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("Event", f"{data.term} (AE {data.ae_id}, version {data.ae_version})"),
        ("CTCAE grade", str(data.grade) if data.grade is not None else "not given"),
        ("Seriousness", criteria),
        ("Relatedness", data.relatedness.value.replace("_", " ") if data.relatedness else "not given"),
        ("Outcome", data.outcome or "not given"),
        ("Clock started", f"{_when(data.awareness_at)} ({basis})"),
        ("Report due", f"{_when(due_at)} ({hours} h)"),
    ]
    subject = f"[{trial_id}] SAE report due {_when(due_at)}: {data.term}, subject {data.subject_id}"
    text = "\n".join(
        [
            f"Serious adverse event — {reason}.",
            "",
            *_lines(rows),
            "",
            "Acknowledge the alert to stop paging; only recording the filed report closes the reporting obligation.",
        ]
    )
    html = (
        f"<html><body><h2>Serious adverse event — {escape(reason)}</h2>"
        f"{_table(rows)}"
        "<p>Acknowledge the alert to stop paging; only recording the filed report closes the reporting "
        "obligation.</p></body></html>"
    )
    return MailContent(subject=subject, text=text, html=html)


def lab_mail(trial_id: str, data: LabToxicityData) -> MailContent:
    baseline = f"grade {data.baseline_grade}" if data.baseline_grade is not None else "no baseline result"
    previous = f"grade {data.previous_grade}" if data.previous_grade is not None else "none"
    rows = [
        ("Trial", trial_id),
        ("Site", data.site_id),
        ("Subject", data.subject_id),
        ("CTCAE term", data.term),
        ("Grade", str(data.grade)),
        ("Result", f"{data.test} = {data.value} {data.unit or ''}".rstrip()),
        ("Collected", _when(data.collected_at)),
        ("Baseline", baseline),
        ("Previously signalled", previous),
        ("Grading", data.reason),
    ]
    subject = f"[{trial_id}] {data.term} grade {data.grade}, subject {data.subject_id}"
    text = "\n".join([f"Lab toxicity worse than baseline: {data.term} grade {data.grade}.", "", *_lines(rows)])
    html = f"<html><body><h2>Lab toxicity: {escape(data.term)} grade {data.grade}</h2>{_table(rows)}</body></html>"
    return MailContent(subject=subject, text=text, html=html)


def _lines(rows: list[tuple[str, str]]) -> list[str]:
    return [f"{label}: {value}" for label, value in rows]


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"
