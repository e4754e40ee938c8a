"""Pure: one mail that lists a recipient's low-urgency notices (missed assessments, deviations), in the
order they were raised, each with its full text, instead of one mail per notice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from services.notify.mail_content import MailContent, when
from shared.events import deterministic_id


@dataclass(frozen=True)
class DigestItem:
    delivery_id: str
    subject: str
    text: str
    raised_at: datetime


def digest_id(delivery_ids: Sequence[str]) -> str:
    """Stable for one set of notices, so a retry of the same digest has the same Message-ID."""
    return deterministic_id("digest", *sorted(delivery_ids))


def digest_mail(items: Sequence[DigestItem]) -> MailContent:
    if not items:
        raise ValueError("a digest needs at least one notice")
    ordered = sorted(items, key=lambda i: (i.raised_at, i.delivery_id))
    count = len(ordered)
    noun = "notice" if count == 1 else "notices"
    subject = f"Digest: {count} {noun} since {when(ordered[0].raised_at)}"
    index = [f"{n}. {item.subject} (raised {when(item.raised_at)})" for n, item in enumerate(ordered, start=1)]
    sections = [f"--- {n}. {item.subject}\n\n{item.text}" for n, item in enumerate(ordered, start=1)]
    text = "\n".join(
        [
            f"{count} low-urgency {noun}, bundled into one mail. None has a deadline; each is an alert to read.",
            "",
            *index,
            "",
            *sections,
        ]
    )
    items_html = "".join(
        f"<li><h3>{escape(item.subject)}</h3><p>raised {escape(when(item.raised_at))}</p>"
        f"<pre>{escape(item.text)}</pre></li>"
        for item in ordered
    )
    html = (
        f"<html><body><h2>{count} low-urgency {noun}</h2>"
        "<p>Bundled into one mail. None has a deadline; each is an alert to read.</p>"
        f"<ol>{items_html}</ol></body></html>"
    )
    return MailContent(subject=subject, text=text, html=html)
