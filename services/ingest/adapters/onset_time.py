"""Pure: an AE onset's time where the format carries one.

A date-time in the onset (FHIR AdverseEvent.date/occurrenceDateTime, SDTM AESTDTC, an ODM or REDCap onset item)
becomes `onset_at`, at the sender's own offset (a naive time is read in the source's zone and flagged), so its
date stays the onset date the site wrote; the 24 h acute-reaction window needs the time.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def onset_instant(text: str | None, *, zone: ZoneInfo, flags: list[str]) -> datetime | None:
    """The onset's date and time when the text carries a time (a date alone has none), at the sender's offset."""
    if text is None or len(text.strip()) <= 10:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None  # the date part is still read by partial_date; an unreadable time is not invented
    if parsed.tzinfo is None:
        flags.append("NAIVE_TIME_IN_SOURCE_ZONE:onset_at")
        parsed = parsed.replace(tzinfo=zone)
    return parsed
