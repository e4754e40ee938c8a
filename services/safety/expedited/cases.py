"""Safety's service layer for expedited reporting: keep each SAE's SUSAR file current and signal its changes.

Three ways a case changes, each inside its caller's transaction:
- a new AE version (from the consumer, after the SAE rules stored it): re-proposes expectedness from the
  RSI and re-decides; day 0 is our receipt of the version that made it a SUSAR;
- the sponsor's causality assessment, or the officer's expectedness decision (officer API, audited): day 0
  is the decision when it is what makes the case a SUSAR;
- the officer's edit of the narrative draft (audited; no signal).

Each decision replays the case from the stored versions and the assessment log (`susar.standing`), so the
versions' processing order does not change the clock: only their receipt times do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from services.safety import protocol_engine, reentry_links, sae_retraction, store
from services.safety.batch_records import BatchRecords
from services.safety.ctcae import lookup_meddra, lookup_term
from services.safety.expedited.expectedness import Expectedness, propose_expectedness
from services.safety.expedited.susar import (
    Assessment,
    SponsorCausality,
    SusarClock,
    SusarDecision,
    VersionFacts,
    decide,
    standing,
)
from services.safety.models import AeSeriousness, AeVersion, Subject, SusarCase
from services.safety.sae import criteria_of
from services.safety.sae_reentry import StoredVersion, terms_of
from shared.audit import AuditEntry, append_audit
from shared.events import (
    AeData,
    AeReported,
    ClinicalEnvelopeBase,
    RecordStatusChanged,
    Relatedness,
    SusarChange,
    SusarData,
    SusarDetected,
    SusarUpdated,
    SusarWithdrawn,
    deterministic_id,
    message_key,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol

AUDIT_SERVICE = protocol_engine.AUDIT_SERVICE
SIGNAL_SOURCE = protocol_engine.SIGNAL_SOURCE
SYSTEM_ACTOR = protocol_engine.SYSTEM_ACTOR


class UnknownCase(LookupError):
    """No serious AE with this id for this subject: nothing to assess."""


def case_entity(trial_id: str, subject_id: str, ae_id: str) -> str:
    return f"susar/{trial_id}/{subject_id}/{ae_id}"


def case_id(trial_id: str, subject_id: str, ae_id: str) -> str:
    return f"{trial_id}-{subject_id}-{ae_id}"


def coded_term(term: str, meddra_code: str | None) -> tuple[str, str | None]:
    """The CTCAE term and its MedDRA code: the site's code if given, else the CTCAE v5.0 list's."""
    info = lookup_term(term)
    if info is not None:
        return info.term, meddra_code or info.meddra_code
    by_code = lookup_meddra(meddra_code) if meddra_code else None
    return (by_code.term if by_code else term), meddra_code


def assess_ae_version(
    session: Session,
    envelope: AeReported,
    *,
    protocol: Protocol,
    signals_topic: str,
    now: datetime,
    seriousness: AeSeriousness | None = None,
    records: BatchRecords | None = None,
) -> list[Outgoing]:
    """Called once per newly stored AE version, after the SAE rules: re-assess the case, signal any change.

    `seriousness`: the AE's folded seriousness as the caller just stored it (else read here); `records`: the
    consumer batch's loaded records."""
    rsi = protocol.reference_safety_information
    if rsi is None or protocol.expedited_reporting is None:
        return []
    keys = {"trial_id": envelope.trialid, "subject_id": envelope.subject, "ae_id": envelope.data.ae_id}
    if seriousness is None:
        session.flush()
        seriousness = session.get(AeSeriousness, tuple(keys.values()))
    if seriousness is None or not seriousness.criteria:
        # Not serious (yet): no expedited-reporting file. Criteria only accumulate over versions and a case is
        # opened only for a serious AE, so no case exists either.
        return []
    case = session.get(SusarCase, tuple(keys.values()))
    ae = envelope.data
    term, meddra = coded_term(ae.ctcae_term or ae.term, ae.meddra_code)
    if case is None:
        case = SusarCase(
            trial_id=envelope.trialid,
            subject_id=envelope.subject,
            ae_id=ae.ae_id,
            term=term,
            proposed_expectedness="unexpected",
            proposed_reason="",
            rsi_version="",
            updated_at=now,
        )
    if ae.version >= case.site_relatedness_version:
        case.term, case.meddra_code = term, meddra
        case.site_relatedness = ae.relatedness.value if ae.relatedness else None
        case.site_relatedness_version = ae.version
    before = (case.proposed_expectedness, case.proposed_reason)
    _propose(case, protocol, seriousness)
    if case.confirmed_expectedness is not None and (case.proposed_expectedness, case.proposed_reason) != before:
        _supersede_confirmation(case, version=ae.version, received_at=envelope.receivedat, now=now, session=session)
    return _decide(
        session,
        case,
        protocol=protocol,
        seriousness=seriousness,
        at=envelope.receivedat,
        site_id=envelope.siteid,
        source_id=envelope.id,
        now=now,
        signals_topic=signals_topic,
        records=records,
    )


def assess_ae_status(
    session: Session,
    envelope: RecordStatusChanged,
    *,
    protocol: Protocol,
    signals_topic: str,
    now: datetime,
    records: BatchRecords | None = None,
) -> list[Outgoing]:
    """The site took an AE back (entered in error, deleted) or restored it: its SUSAR file is decided again. An AE
    taken back is no case (withdrawn: its open reports are cancelled); restored, it is a case again with the day 0
    its versions give. A status that comes before the AE's first version is read when the version comes."""
    if protocol.reference_safety_information is None or protocol.expedited_reporting is None:
        return []
    key = (envelope.trialid, envelope.subject, envelope.data.record_id)
    case = session.get(SusarCase, key)
    if case is None:
        return []
    return _decide(
        session,
        case,
        protocol=protocol,
        seriousness=session.get(AeSeriousness, key),
        at=envelope.data.changed_at or envelope.receivedat,
        site_id=envelope.siteid,
        source_id=envelope.id,
        now=now,
        signals_topic=signals_topic,
        records=records,
    )


def reassess_reentries(
    session: Session,
    records: BatchRecords,
    envelope: ClinicalEnvelopeBase,
    *,
    withdrawn_ae_id: str,
    named: str | None,
    protocol: Protocol,
    signals_topic: str,
    now: datetime,
) -> list[Outgoing]:
    """The site took AE `withdrawn_ae_id` back, restored it, or sent a version of it while taken back: the SUSAR files
    that may take their day 0 from it (`_inherited`) are decided again: the subject's serious AEs of a term it
    shares, and the AE its retraction names (`named`: `replaced_by` of the retraction, or of the one a restore
    ended), here or, for an AE entered under a mistyped subject id, in another subject of the trial
    (`reentry_links`). A day 0 that moves earlier is signalled (`clock_earlier`); later (a restore ends the link),
    the file's reports are withdrawn and opened again on its own day 0 (`susar.decide`)."""
    if protocol.reference_safety_information is None or protocol.expedited_reporting is None:
        return []
    subject_id = envelope.subject
    versions = records.ae_versions_of(subject_id)
    theirs = terms_of(_stored(v) for v in versions if v.ae_id == withdrawn_ae_id)
    targets = [
        (subject_id, case.ae_id)
        for case in session.exec(
            select(SusarCase).where(SusarCase.trial_id == envelope.trialid, SusarCase.subject_id == subject_id)
        ).all()
        if case.ae_id != withdrawn_ae_id
        and (case.ae_id == named or terms_of(_stored(v) for v in versions if v.ae_id == case.ae_id) & theirs)
    ]
    if named:
        targets += [
            (s, named) for s in reentry_links.reentry_subjects(records, subject_id=subject_id, replaced_by=named)
        ]
    return _redecide(session, records, envelope, targets, protocol=protocol, signals_topic=signals_topic, now=now)


def reassess_holders(
    session: Session,
    records: BatchRecords,
    envelope: AeReported,
    *,
    protocol: Protocol,
    signals_topic: str,
    now: datetime,
) -> list[Outgoing]:
    """The first version of an AE whose id a standing retraction names as its replacement (`reentry_links.
    named_on_arrival`): the other subjects' SUSAR files of that id are decided again, since a cross-subject link ends
    when the deleting subject's own AE of that id comes or a second other subject holds one
    (`reentry_links.linked_subject`): a day 0 that moves later is withdrawn and opened again on the file's own
    (`susar.decide`)."""
    if protocol.reference_safety_information is None or protocol.expedited_reporting is None:
        return []
    ae_id, newcomer = envelope.data.ae_id, envelope.subject
    targets = [(s, ae_id) for s in sorted(reentry_links.holders(records, ae_id=ae_id) - {newcomer})]
    return _redecide(session, records, envelope, targets, protocol=protocol, signals_topic=signals_topic, now=now)


def _redecide(
    session: Session,
    records: BatchRecords,
    envelope: ClinicalEnvelopeBase,
    targets: Sequence[tuple[str, str]],
    *,
    protocol: Protocol,
    signals_topic: str,
    now: datetime,
) -> list[Outgoing]:
    """Decide these (subject, AE) SUSAR files again, for a link `envelope` may have made or ended."""
    out: list[Outgoing] = []
    for target_subject, ae_id in targets:
        case = session.get(SusarCase, (envelope.trialid, target_subject, ae_id))
        if case is None:
            continue
        subject = records.subject(target_subject)
        out += _decide(
            session,
            case,
            protocol=protocol,
            seriousness=records.seriousness(target_subject, ae_id),
            at=envelope.receivedat,
            site_id=subject.site_id if subject is not None else envelope.siteid,
            source_id=deterministic_id(
                "susar-relink", envelope.id, case_entity(envelope.trialid, target_subject, ae_id)
            ),
            now=now,
            signals_topic=signals_topic,
            records=records,
        )
    return out


def _stored(row: AeVersion) -> StoredVersion:
    return StoredVersion(row.ae_id, row.payload, row.received_at, version=row.version, event_id=row.event_id)


def record_causality(
    session: Session,
    *,
    protocol: Protocol,
    trial_id: str,
    subject_id: str,
    ae_id: str,
    causality: SponsorCausality,
    actor: str,
    reason: str,
    now: datetime,
    signals_topic: str,
) -> tuple[SusarCase, list[Outgoing]]:
    """The sponsor's causality assessment (one input; the site's relatedness still counts if it says related)."""
    case, seriousness, site_id = _load(session, trial_id, subject_id, ae_id)
    before = case.sponsor_causality
    basis = f"sponsor causality assessment ({causality.replace('_', ' ')}) by {actor}"
    _log(session, case, Assessment("causality", causality, now, basis[:200]))
    case.sponsor_causality, case.causality_by, case.causality_at, case.causality_reason = causality, actor, now, reason
    _audit(
        session, case, actor, "susar.causality_assessed", {"before": before, "after": causality, "reason": reason}, now
    )
    return case, _officer_decided(session, case, protocol, seriousness, site_id, now, signals_topic)


def record_expectedness(
    session: Session,
    *,
    protocol: Protocol,
    trial_id: str,
    subject_id: str,
    ae_id: str,
    expectedness: Expectedness,
    actor: str,
    reason: str,
    now: datetime,
    signals_topic: str,
) -> tuple[SusarCase, list[Outgoing]]:
    """The officer confirms or overrides the RSI's proposal; the reason goes to the audit trail."""
    case, seriousness, site_id = _load(session, trial_id, subject_id, ae_id)
    before = case.confirmed_expectedness
    basis = f"sponsor expectedness assessment ({expectedness}) by {actor}"
    _log(session, case, Assessment("expectedness", expectedness, now, basis[:200]))
    case.confirmed_expectedness, case.expectedness_by = expectedness, actor
    case.expectedness_at, case.expectedness_reason = now, reason
    detail = {
        "before": before,
        "after": expectedness,
        "proposed": case.proposed_expectedness,
        "rsi_version": case.rsi_version,
        "reason": reason,
    }
    _audit(session, case, actor, "susar.expectedness_assessed", detail, now)
    return case, _officer_decided(session, case, protocol, seriousness, site_id, now, signals_topic)


def _officer_decided(
    session: Session,
    case: SusarCase,
    protocol: Protocol,
    seriousness: AeSeriousness,
    site_id: str,
    now: datetime,
    signals_topic: str,
) -> list[Outgoing]:
    """An officer's assessment is a fact of its own: the case is decided again, day 0 at the decision when it is
    what made the case a SUSAR."""
    return _decide(
        session,
        case,
        protocol=protocol,
        seriousness=seriousness,
        at=now,
        site_id=site_id,
        source_id=deterministic_id(
            "susar-decision", case_entity(case.trial_id, case.subject_id, case.ae_id), str(case.revision)
        ),
        now=now,
        signals_topic=signals_topic,
    )


def save_narrative(
    session: Session, *, trial_id: str, subject_id: str, ae_id: str, text: str | None, actor: str, now: datetime
) -> SusarCase:
    """The officer's edited narrative replaces the generated draft in exports; None goes back to the draft."""
    case, _seriousness, _site = _load(session, trial_id, subject_id, ae_id)
    case.narrative, case.narrative_by, case.narrative_at = text, actor, now
    case.updated_at = now
    session.add(case)
    _audit(session, case, actor, "susar.narrative_edited", {"narrative": text}, now)
    return case


def _supersede_confirmation(
    case: SusarCase, *, version: int, received_at: datetime, now: datetime, session: Session
) -> None:
    """New facts (a worse grade, a fatal outcome, another term) change the RSI's answer: the officer's earlier
    confirmation was about other facts, so it no longer stands; the new proposal counts until re-confirmed.

    In the log it stops standing when those facts were received (never before it was made)."""
    confirmed_at = case.expectedness_at or received_at
    void_from = max(received_at, confirmed_at)
    _log(session, case, Assessment("expectedness", None, void_from, f"new facts in AE version {version}"))
    detail = {
        "superseded": case.confirmed_expectedness,
        "confirmed_by": case.expectedness_by,
        "proposal_now": case.proposed_expectedness,
        "why": case.proposed_reason,
        "ae_version": version,
    }
    case.confirmed_expectedness = None
    case.expectedness_by = case.expectedness_at = case.expectedness_reason = None
    _audit(session, case, SYSTEM_ACTOR, "susar.expectedness_confirmation_superseded", detail, now)


def effective_expectedness(case: SusarCase) -> Expectedness:
    value = case.confirmed_expectedness or case.proposed_expectedness
    return "expected" if value == "expected" else "unexpected"


def _load(session: Session, trial_id: str, subject_id: str, ae_id: str) -> tuple[SusarCase, AeSeriousness, str]:
    key = (trial_id, subject_id, ae_id)
    case = session.get(SusarCase, key)
    seriousness = session.get(AeSeriousness, key)
    if case is None or seriousness is None:
        raise UnknownCase(f"no serious AE '{ae_id}' for subject '{subject_id}' in trial '{trial_id}'")
    subject = session.get(Subject, (trial_id, subject_id))
    return case, seriousness, subject.site_id if subject is not None else ""


def _propose(case: SusarCase, protocol: Protocol, seriousness: AeSeriousness | None) -> None:
    rsi = protocol.reference_safety_information
    assert rsi is not None  # checked by the callers' guard
    criteria = set(seriousness.criteria) if seriousness is not None else set()
    proposal = propose_expectedness(
        rsi,
        term=case.term,
        meddra_code=case.meddra_code,
        grade=seriousness.max_grade if seriousness is not None else None,
        fatal="death" in criteria,
    )
    case.proposed_expectedness = proposal.expectedness
    case.proposed_reason = proposal.reason[:1000]
    case.rsi_version = proposal.rsi_version


def _decide(
    session: Session,
    case: SusarCase,
    *,
    protocol: Protocol,
    seriousness: AeSeriousness | None,
    at: datetime,
    site_id: str,
    source_id: str,
    now: datetime,
    signals_topic: str,
    records: BatchRecords | None = None,
) -> list[Outgoing]:
    """Replay the case from its stored versions and assessments, store the standing, signal what changed.

    `records`: the consumer batch's loaded records (an officer's assessment reads through a fresh one)."""
    rsi = protocol.reference_safety_information
    if rsi is None or protocol.expedited_reporting is None:
        case.updated_at = now
        session.add(case)
        return []

    def propose(term: str, meddra_code: str | None, grade: int | None, fatal: bool) -> Expectedness:
        return propose_expectedness(rsi, term=term, meddra_code=meddra_code, grade=grade, fatal=fatal).expectedness

    prior = SusarClock(
        susar=case.susar,
        clock_start=case.clock_start,
        clock_basis=case.clock_basis,
        fatal_or_life_threatening=case.fatal_or_life_threatening,
        upgraded_at=case.upgraded_at,
        signalled_version=case.signalled_version,
    )
    versions = _versions(session, case)
    _ensure_log(session, case, versions)
    records = records or BatchRecords(session, trial_id=case.trial_id, envelopes=())
    taken_back = records.inactive(case.subject_id, "ae").get(case.ae_id)
    # An AE the site took back (entered in error, deleted) is no case: none of its versions counts. A re-entry of one
    # it took back is the same case: the first record's versions are the sponsor's earlier knowledge of it.
    known = [] if taken_back else [*_inherited(records, case, seriousness, protocol), *versions]
    now_standing = standing(known, assessments_of(case), propose=propose)
    decision = decide(prior, now_standing)
    if taken_back and decision.change is not None:
        decision = replace(decision, reason=f"the site marked AE {case.ae_id} {taken_back.replace('_', ' ')}")
    clock = decision.clock
    case.susar, case.clock_start = clock.susar, clock.clock_start
    case.clock_basis = clock.clock_basis[:200] if clock.clock_basis else None
    case.fatal_or_life_threatening, case.upgraded_at = clock.fatal_or_life_threatening, clock.upgraded_at
    case.signalled_version = clock.signalled_version
    case.updated_at = now
    case.revision += 1
    session.add(case)
    if decision.change is None:
        return []
    changes: list[SusarChange] = [decision.change]
    if decision.change == "detected" and prior.susar:
        # Day 0 later than signalled: a late version shows the case stopped qualifying and qualified again. As in
        # order: the reports of the earlier stretch are withdrawn, the new stretch's are opened.
        changes = ["withdrawn", "detected"]
    latest = seriousness.latest_version if seriousness is not None else case.site_relatedness_version
    first_serious = seriousness.first_serious_version if seriousness is not None else None
    out = []
    for change in changes:
        _audit(
            session,
            case,
            SYSTEM_ACTOR,
            f"susar.{change}",
            {"reason": decision.reason, "basis": case.clock_basis, "at": at.isoformat()},
            now,
        )
        signal = _signal(
            case,
            replace(decision, change=change, clock=prior) if change != decision.change else decision,
            protocol=protocol,
            criteria=sorted(seriousness.criteria) if seriousness is not None else [],
            grade=seriousness.max_grade if seriousness is not None else None,
            report_version=report_version(first_serious, latest),
            ae_version=latest,
            site_id=site_id,
            at=at,
            source_id=source_id,
        )
        out.append(Outgoing(topic=signals_topic, key=message_key(case.trial_id, case.subject_id), envelope=signal))
    return out


def _inherited(
    records: BatchRecords, case: SusarCase, seriousness: AeSeriousness | None, protocol: Protocol
) -> list[VersionFacts]:
    """The versions of the serious AE this case's AE re-enters, by the SAE clock's own link (`sae_reentry`, through
    `sae_retraction.reentry_clock`): one rule links a re-entry for its 24 h clock and for its SUSAR day 0."""
    if seriousness is None or not seriousness.criteria:
        return []
    own = store.sae_state_of(seriousness)
    lookback = timedelta(hours=protocol.sae.reentry_lookback_hours)
    _, link = sae_retraction.reentry_clock(
        records, subject_id=case.subject_id, ae_id=case.ae_id, state=own, lookback=lookback
    )
    if link is None:
        return []
    inherited = []
    for withdrawn in (link.withdrawn, *link.chain):  # a chain (A -> B -> C): every earlier record is the case's
        rows = records.ae_versions_of(withdrawn.subject_id or case.subject_id)
        label = withdrawn.label.removeprefix("AE ")
        inherited += [replace(_facts(row), inherited_from=label) for row in rows if row.ae_id == withdrawn.ae_id]
    return inherited


def _versions(session: Session, case: SusarCase) -> list[VersionFacts]:
    """Every stored version of the case's AE, as the SUSAR rules read it (the one being processed included)."""
    rows = session.exec(
        select(AeVersion).where(
            AeVersion.trial_id == case.trial_id, AeVersion.subject_id == case.subject_id, AeVersion.ae_id == case.ae_id
        )
    ).all()
    return [_facts(row) for row in rows]


def _facts(row: AeVersion) -> VersionFacts:
    data = AeData.model_validate(row.payload)
    term, meddra = coded_term(data.ctcae_term or data.term, data.meddra_code)
    return VersionFacts(
        version=row.version,
        received_at=row.received_at,
        event_id=row.event_id,
        criteria=criteria_of(data),
        grade=data.grade,
        relatedness=data.relatedness.value if data.relatedness else None,
        term=term,
        meddra_code=meddra,
    )


def assessments_of(case: SusarCase) -> list[Assessment]:
    """The case's assessment log; a case from before the log and without an audit trail of its assessments: its
    current assessments, from when they were made."""
    if case.assessments is not None:
        return [
            Assessment(
                kind="causality" if entry.get("kind") == "causality" else "expectedness",
                value=str(entry["value"]) if entry.get("value") is not None else None,
                at=datetime.fromisoformat(str(entry["at"])),
                basis=str(entry.get("basis", "")),
            )
            for entry in case.assessments
        ]
    made = []
    if case.sponsor_causality is not None and case.causality_at is not None:
        basis = f"sponsor causality assessment ({case.sponsor_causality.replace('_', ' ')}) by {case.causality_by}"
        made.append(Assessment("causality", case.sponsor_causality, case.causality_at, basis[:200]))
    if case.confirmed_expectedness is not None and case.expectedness_at is not None:
        basis = f"sponsor expectedness assessment ({case.confirmed_expectedness}) by {case.expectedness_by}"
        made.append(Assessment("expectedness", case.confirmed_expectedness, case.expectedness_at, basis[:200]))
    return made


def _log(session: Session, case: SusarCase, assessment: Assessment) -> None:
    """Append to the log, before the case's fields change and before the audit entry of this assessment is
    written. A new list: the JSON column is saved when reassigned."""
    _ensure_log(session, case, None)
    case.assessments = [*(_entry(a) for a in assessments_of(case)), _entry(assessment)]


ASSESSMENT_ACTIONS = (
    "susar.causality_assessed",
    "susar.expectedness_assessed",
    "susar.expectedness_confirmation_superseded",
)


def _ensure_log(session: Session, case: SusarCase, versions: Sequence[VersionFacts] | None) -> None:
    """A case from before the log (migration safety_0011): rebuild it once from the case's audit trail, which
    holds every assessment and every superseded confirmation, so its replay keeps each in its place in time
    (its current assessments alone would lose an override later voided, and backdate day 0). No audit either:
    the current assessments stand in (`assessments_of`)."""
    if case.assessments is not None:
        return
    entries = session.exec(
        select(AuditEntry)
        .where(
            AuditEntry.entity == case_entity(case.trial_id, case.subject_id, case.ae_id),
            col(AuditEntry.action).in_(ASSESSMENT_ACTIONS),
        )
        .order_by(col(AuditEntry.seq))
    ).all()
    if not entries:
        return
    received: dict[int, datetime] | None = None
    log: list[Assessment] = []
    confirmed_at: datetime | None = None
    for entry in entries:
        detail = entry.detail
        after = detail.get("after")
        if entry.action == "susar.causality_assessed":
            basis = f"sponsor causality assessment ({str(after).replace('_', ' ')}) by {entry.actor}"
            log.append(Assessment("causality", str(after) if after else None, entry.at, basis[:200]))
        elif entry.action == "susar.expectedness_assessed":
            basis = f"sponsor expectedness assessment ({after}) by {entry.actor}"
            log.append(Assessment("expectedness", str(after) if after else None, entry.at, basis[:200]))
            confirmed_at = entry.at
        else:
            if received is None:
                received = {v.version: v.received_at for v in (versions or _versions(session, case))}
            version = detail.get("ae_version")
            learnt = received.get(version, entry.at) if isinstance(version, int) else entry.at
            void_from = max(learnt, confirmed_at) if confirmed_at is not None else learnt
            log.append(Assessment("expectedness", None, void_from, f"new facts in AE version {version}"))
    case.assessments = [_entry(a) for a in log]


def _entry(assessment: Assessment) -> dict[str, object]:
    return {
        "kind": assessment.kind,
        "value": assessment.value,
        "at": assessment.at.isoformat(),
        "basis": assessment.basis,
    }


def _causality(value: str | None) -> SponsorCausality | None:
    if value == "related":
        return "related"
    if value == "not_related":
        return "not_related"
    return None


def report_version(first_serious_version: int | None, ae_version: int) -> int:
    """Safety report version: 1 for the version that first made the AE serious, +1 per later version."""
    if first_serious_version is None:
        return 1
    return max(1, ae_version - first_serious_version + 1)


def _signal(
    case: SusarCase,
    decision: SusarDecision,
    *,
    protocol: Protocol,
    criteria: list[str],
    grade: int | None,
    report_version: int,
    ae_version: int,
    site_id: str,
    at: datetime,
    source_id: str,
) -> SusarDetected | SusarUpdated | SusarWithdrawn:
    change = decision.change
    assert change is not None
    clock = decision.clock
    data = SusarData(
        case_id=case_id(case.trial_id, case.subject_id, case.ae_id),
        site_id=site_id,
        subject_id=case.subject_id,
        ae_id=case.ae_id,
        ae_version=ae_version,
        report_version=report_version,
        term=case.term,
        meddra_code=case.meddra_code,
        grade=grade,
        criteria=criteria,
        fatal_or_life_threatening=bool(set(criteria) & {"death", "life_threatening"}),
        site_relatedness=Relatedness(case.site_relatedness) if case.site_relatedness else None,
        sponsor_causality=_causality(case.sponsor_causality),
        expectedness=effective_expectedness(case),
        expectedness_basis="officer" if case.confirmed_expectedness else "rsi_proposal",
        rsi_version=case.rsi_version,
        change=change,
        clock_start=clock.clock_start or at,
        clock_basis=clock.clock_basis or "",
        upgraded_at=clock.upgraded_at,
        changed_at=at,
        reason=decision.reason,
        source_event_id=source_id,
    )
    common = {
        "id": deterministic_id("signal", source_id, "susar", change),
        "source": SIGNAL_SOURCE,
        "subject": case.subject_id,
        "time": at,
        "trialid": case.trial_id,
        "data": data,
    }
    if change == "detected":
        return SusarDetected.model_validate(common)
    if change == "withdrawn":
        return SusarWithdrawn.model_validate(common)
    return SusarUpdated.model_validate(common)


def _audit(
    session: Session, case: SusarCase, actor: str, action: str, detail: Mapping[str, object], now: datetime
) -> None:
    append_audit(
        session,
        service=AUDIT_SERVICE,
        actor=actor,
        action=action,
        entity=case_entity(case.trial_id, case.subject_id, case.ae_id),
        detail=detail,
        now=now,
    )


def cases_for(session: Session, *, trial_id: str, susar_only: bool) -> Sequence[SusarCase]:
    query = select(SusarCase).where(SusarCase.trial_id == trial_id)
    if susar_only:
        query = query.where(col(SusarCase.susar).is_(True))
    return session.exec(query.order_by(col(SusarCase.subject_id), col(SusarCase.ae_id))).all()
