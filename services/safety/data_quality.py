"""Data-quality findings as signals: what in a record the rules could not trust as given goes to the site
contact through notify (`data_quality.flagged`), never only into a log or a stored reason.

Ids derive from the source event and the finding's code, so a replay dedupes and a re-sent record flags
again only if it is a new version (a new event id).
"""

from __future__ import annotations

from services.safety import protocol_engine
from services.safety.ctcae import Grade
from services.safety.lab_toxicity import lab_findings
from services.safety.sae import consistency_flags
from shared.events import (
    AeReported,
    ClinicalEnvelopeBase,
    DataQualityData,
    DataQualityFlagged,
    LabResulted,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol

INCONSISTENT_SERIOUSNESS = "inconsistent_seriousness"
CONFLICTING_RESEND = "conflicting_resend"
"""A record version sent again with other content: the first stands, the site sends a new version."""


def flag(
    envelope: ClinicalEnvelopeBase,
    *,
    record_type: str,
    record_id: str,
    code: str,
    detail: str,
    topic: str,
    per_record: bool = False,
) -> Outgoing:
    """`per_record`: one event may raise this finding about several records (its id then names the subject and the
    record: AE ids are numbered per subject, so one event may raise it about two subjects' 'AE-1')."""
    parts = (
        (envelope.id, "data_quality", code, envelope.subject, record_id)
        if per_record
        else (envelope.id, "data_quality", code)
    )
    signal = DataQualityFlagged(
        id=deterministic_id("signal", *parts),
        source=protocol_engine.SIGNAL_SOURCE,
        subject=envelope.subject,
        time=envelope.receivedat,
        trialid=envelope.trialid,
        data=DataQualityData(
            site_id=envelope.siteid,
            subject_id=envelope.subject,
            record_type=record_type,
            record_id=record_id,
            code=code,
            detail=detail[:2000],
            source_event_id=envelope.id,
        ),
    )
    return Outgoing(topic=topic, key=message_key(envelope.trialid, envelope.subject), envelope=signal)


def lab_flags(envelope: LabResulted, *, protocol: Protocol, topic: str, graded: Grade | None = None) -> list[Outgoing]:
    """An implausible value or limit, an ambiguous number or a unit we do not know: the site must fix it.

    `graded`: the record already graded on its own fields (no baseline), when the caller has it."""
    findings = lab_findings(envelope.data, population_max=protocol.data_quality.population_max, graded=graded)
    return [
        flag(envelope, record_type="lab", record_id=envelope.data.result_id, code=f.code, detail=f.detail, topic=topic)
        for f in findings
    ]


def seriousness_flags(envelope: AeReported, *, topic: str) -> list[Outgoing]:
    """The site's serious flag contradicts its own criteria (accepted and never downgraded; the site resolves)."""
    found = consistency_flags(envelope.data)
    if not found:
        return []
    detail = f"AE {envelope.data.ae_id} version {envelope.data.version} ({envelope.data.term}): " + "; ".join(found)
    return [
        flag(
            envelope,
            record_type="ae",
            record_id=envelope.data.ae_id,
            code=INCONSISTENT_SERIOUSNESS,
            detail=detail,
            topic=topic,
        )
    ]
