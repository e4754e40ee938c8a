"""Two lanes for clinical events and two for signals, so a backfill never holds back what must page.

Ingest publishes a backfill (an SDTM extract, a REDCap reconciliation pull, any request of more than
BULK_REQUEST_EVENTS events) to the bulk topic, except the events that must page at once (a serious AE or
one of grade 3 or more), which take the urgent topic like every event posted on its own. Safety consumes
both and polls the bulk topic only when the urgent one has nothing waiting (or after `shared.kafka.BULK_TURN_AFTER`
urgent batches in a row, so a bulk record's wait is bounded), so an SAE posted during a 100,000-row backfill waits
for one bulk batch at most. Safety's state does not depend on the order in which
one subject's events arrive, which is what lets a subject's events travel on two topics.

Safety's signals take two lanes by kind: the routine ones a backfill raises by the hundred (lab toxicities,
data-quality findings, missed assessments, deviations, lost responses) go to `<signals>.routine`; the case and
decision signals (SAE, SUSAR, DLT, acute reaction, cohort, stopping rule, dose) stay on the signals topic, which
notify drains first. Notify keeps an alert thread per kind, and each kind travels on one lane, so a thread's
signals keep their order (measured: an SAE waited 7.5 s behind the 767 lab signals of a 25,000-row backfill of
this trial's cytopenic population). One exception by content: a deviation that pages (a subject dosed while
ineligible or from a lot not released, overdosed, enrolled into an arm held, stopped or under DLT review: a subject
may be at risk) takes the signals topic; each deviation is its own alert thread, so no thread spans two lanes. So
does the finding of a death recorded with no fatal AE (its thread is one record and code).

One exception by origin: a lab toxicity raised by a result that came on its own (the urgent clinical topic, not a
backfill's bulk lane) takes the signals topic, so a grade 4 count a site has just entered pages within seconds
(measured: 10 s behind the lab signals of the first 25,000 rows of a cytopenic backfill). A lab thread may then
span both lanes; notify tells a lab signal that safety raised before the one its alert shows from its content
(`services.notify.lab_alerts.raised_before`) and does not let it overwrite or re-page the newer one.
"""

from __future__ import annotations

from shared.events import AeReported, ClinicalEnvelopeBase

BULK_SUFFIX = ".bulk"
ROUTINE_SUFFIX = ".routine"
BULK_REQUEST_EVENTS = 500
"""A request with more events than this is a backfill, whatever route it came by."""

URGENT_AE_GRADE = 3


ROUTINE_SIGNALS = frozenset(
    {
        "lab.toxicity",
        "lab.toxicity_withdrawn",
        "data_quality.flagged",
        "assessment.missed",
        "protocol.deviation",
        "response.lost",
    }
)
"""Signal types on the routine lane. A kind's signals must all take one lane (see the module docstring), but for
LIVE_URGENT_SIGNALS."""

LIVE_URGENT_SIGNALS = frozenset({"lab.toxicity"})
"""Routine kinds that take the signals topic when the event that raised them was not a backfill's. Not a lab
finding's withdrawal: on the routine lane always, it never overtakes the finding it withdraws, whichever lane that
took (the routine lane is drained after the signals topic, and one subject's signals keep their order on it)."""


def routine_topic(signals_topic: str) -> str:
    """The routine lane of a signals topic (derived, as the bulk lane is)."""
    return signals_topic + ROUTINE_SUFFIX


def signal_topic(topic: str, envelope: object, *, live: bool = False) -> str:
    """Where a message queued for `topic` goes: a routine signal to the routine lane, anything else (a deviation
    that pages, and a lab toxicity raised by a `live` event, one that did not come on a bulk lane) to `topic`."""
    kind = getattr(envelope, "type", None)
    if kind not in ROUTINE_SIGNALS or _urgent(kind, getattr(envelope, "data", None)):
        return topic
    if live and kind in LIVE_URGENT_SIGNALS:
        return topic
    return routine_topic(topic)


URGENT_FINDINGS = frozenset({"death_without_fatal_ae"})
"""Data-quality findings that take the signals topic: a death the site recorded with no fatal AE on record."""


def _urgent(kind: str, data: object) -> bool:
    """A routine kind's signal that must not wait: a deviation that pages, a finding of an unreported death."""
    if kind == "protocol.deviation":
        return getattr(data, "pages", False) is True
    return kind == "data_quality.flagged" and getattr(data, "code", None) in URGENT_FINDINGS


def bulk_topic(clinical_topic: str) -> str:
    """The bulk lane of a clinical topic (derived, so a test's own topics get their own bulk lane)."""
    return clinical_topic + BULK_SUFFIX


def is_bulk(topic: str) -> bool:
    """A record consumed from a backfill's lane (the clinical bulk lane, or the routine signals lane, where notify
    finds a backfill's lab toxicities): what it raises is not urgent by its origin."""
    return topic.endswith((BULK_SUFFIX, ROUTINE_SUFFIX))


def must_page(envelope: ClinicalEnvelopeBase) -> bool:
    """An AE that is serious (or has a seriousness criterion ticked) or of grade 3 or more."""
    if not isinstance(envelope, AeReported):
        return False
    ae = envelope.data
    ticked = ae.seriousness is not None and bool(ae.seriousness.ticked())
    return ae.serious is True or ticked or (ae.grade or 0) >= URGENT_AE_GRADE


def is_backfill(*, events: int, backfill_route: bool) -> bool:
    return backfill_route or events > BULK_REQUEST_EVENTS


def clinical_topic_for(envelope: ClinicalEnvelopeBase, *, clinical_topic: str, backfill: bool) -> str:
    """Where ingest publishes one event of a request."""
    if backfill and not must_page(envelope):
        return bulk_topic(clinical_topic)
    return clinical_topic
