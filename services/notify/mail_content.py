"""Pure: the words of an SAE mail, in plain text and HTML, naming everything a safety officer needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from shared.events import SaeData


@dataclass(frozen=True)
class MailContent:
    subject: str
    text: str
    html: str


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


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
            *(f"{label}: {value}" for label, value in rows),
            "",
            "Acknowledge the alert to stop paging; only recording the filed report closes the reporting obligation.",
        ]
    )
    html_rows = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    html = (
        f"<html><body><h2>Serious adverse event — {escape(reason)}</h2>"
        f"<table>{html_rows}</table>"
        "<p>Acknowledge the alert to stop paging; only recording the filed report closes the reporting "
        "obligation.</p></body></html>"
    )
    return MailContent(subject=subject, text=text, html=html)
