"""ICH E2A seriousness, as a pure function of the AE's versions so far.

Seriousness is never downgraded: a criterion once reported stays, whatever a later version says,
because a wrongly closed SAE clock is the failure a safety officer cannot afford. For the same reason the
clock's start (awareness) only ever moves earlier, when a late-processed version shows earlier awareness.

Only the site can take an SAE back: an AE it marks entered in error or deleted is no case (ICH E2B(R3)
nullification), whatever its seriousness; a later non-serious version is not a retraction (E2A: the case stays
reportable). Whether notify holds the SAE open is a function of the stored seriousness and the site's status
(`reportable`), so the same data in any order ends in the same state: a retraction processed before the AE's
first version means the SAE is never opened, and a restore brings it back with its original awareness.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from shared.events import AeData, AeReported, AwarenessBasis, ClinicalEnvelopeBase, SaeData

FATAL_OUTCOMES = frozenset({"fatal", "death", "died", "dead"})


class SaeSignalKind(StrEnum):
    DETECTED = "sae.detected"
    UPDATED = "sae.updated"
    WITHDRAWN = "sae.withdrawn"


@dataclass(frozen=True)
class SaeState:
    criteria: frozenset[str]
    max_grade: int | None
    latest_version: int
    outcome: str | None
    awareness_at: datetime | None = None
    awareness_basis: AwarenessBasis | None = None
    first_serious_version: int | None = None

    @property
    def serious(self) -> bool:
        return bool(self.criteria)


@dataclass(frozen=True)
class SaeAssessment:
    state: SaeState
    signal: SaeSignalKind | None
    flags: tuple[str, ...] = ()


REPORTED_SERIOUS = "reported_serious"


def criteria_of(ae: AeData) -> frozenset[str]:
    """Every reason this version makes the AE serious, including implied ones (grade 5, fatal outcome)."""
    criteria = set(ae.seriousness.ticked()) if ae.seriousness else set()
    if ae.grade == 5 or (ae.outcome or "").strip().lower() in FATAL_OUTCOMES:
        criteria.add("death")
    if ae.serious and not criteria:
        criteria.add(REPORTED_SERIOUS)
    return frozenset(criteria)


def merge_criteria(*sets: frozenset[str]) -> frozenset[str]:
    """Union over versions; 'reported_serious' only stands in while no real criterion is known."""
    merged = frozenset().union(*sets)
    real = merged - {REPORTED_SERIOUS}
    return real or merged


def consistency_flags(ae: AeData) -> tuple[str, ...]:
    """Contradictions the site should resolve; accepted and flagged, never used to downgrade."""
    ticked = set(ae.seriousness.ticked()) if ae.seriousness else set()
    flags = []
    if ae.serious is False and criteria_of(ae):
        flags.append("serious=false but a seriousness criterion, grade 5 or a fatal outcome is reported")
    if ae.serious is True and not ticked:
        flags.append("serious=true without any seriousness criterion ticked")
    return tuple(flags)


def clock_start(ae: AeData, *, received_at: datetime) -> tuple[datetime, AwarenessBasis]:
    """The site's awareness, but never after we received the report: the site knew by the time it sent it, so an
    awareness date after receipt (a typo, a time zone slip) cannot push the 24 h clock later."""
    if ae.awareness_at is not None and ae.awareness_at <= received_at:
        return ae.awareness_at, AwarenessBasis.SITE
    return received_at, AwarenessBasis.RECEIPT


def reportable(state: SaeState | None, *, taken_back: bool) -> bool:
    """An SAE notify holds open (a report to file): serious, and not taken back by the site."""
    return state is not None and state.serious and not taken_back


def status_change_signal(state: SaeState | None, *, was_taken_back: bool, taken_back: bool) -> SaeSignalKind | None:
    """The site took an AE back or restored it: WITHDRAWN when that ends a reportable SAE, DETECTED when it brings
    one back (its stored awareness: the clock does not restart), None when notify holds nothing different (not
    serious, never reported, entered in error then deleted, restored twice)."""
    before = reportable(state, taken_back=was_taken_back)
    after = reportable(state, taken_back=taken_back)
    if before and not after:
        return SaeSignalKind.WITHDRAWN
    if after and not before:
        return SaeSignalKind.DETECTED
    return None


def assess_ae(prior: SaeState | None, ae: AeData, *, received_at: datetime, taken_back: bool = False) -> SaeAssessment:
    """Fold one AE version into the state; say whether it opens an SAE or updates one.

    `taken_back`: the site has this AE marked entered in error or deleted. The version still folds into the state
    (awareness included, so a restore brings the SAE back with the clock it would have had) but signals nothing."""
    assessment = _assess(prior, ae, received_at=received_at)
    if taken_back and assessment.signal is not None:
        return replace(assessment, signal=None)
    return assessment


def _assess(prior: SaeState | None, ae: AeData, *, received_at: datetime) -> SaeAssessment:
    criteria = merge_criteria(criteria_of(ae), prior.criteria if prior else frozenset())
    grades = [g for g in (ae.grade, prior.max_grade if prior else None) if g is not None]
    newest = prior is None or ae.version >= prior.latest_version
    state = SaeState(
        criteria=criteria,
        max_grade=max(grades) if grades else None,
        latest_version=max(ae.version, prior.latest_version) if prior else ae.version,
        outcome=ae.outcome if newest else (prior.outcome if prior else None),
        awareness_at=prior.awareness_at if prior else None,
        awareness_basis=prior.awareness_basis if prior else None,
        first_serious_version=prior.first_serious_version if prior else None,
    )
    flags = consistency_flags(ae)
    if not state.serious:
        return SaeAssessment(state, None, flags)
    if prior is None or not prior.serious:
        awareness, basis = clock_start(ae, received_at=received_at)
        opened = SaeState(
            criteria=state.criteria,
            max_grade=state.max_grade,
            latest_version=state.latest_version,
            outcome=state.outcome,
            awareness_at=awareness,
            awareness_basis=basis,
            first_serious_version=ae.version,
        )
        return SaeAssessment(opened, SaeSignalKind.DETECTED, flags)
    state, earlier = _earliest_awareness(state, ae, received_at=received_at)
    if criteria_of(ae) and ae.version < (state.first_serious_version or ae.version):
        # an older serious version processed late (same awareness): the case began with it, whatever the order
        state = replace(state, first_serious_version=ae.version)
    worse = bool(state.criteria - prior.criteria) or (state.max_grade or 0) > (prior.max_grade or 0)
    outcome_changed = newest and state.outcome != prior.outcome
    return SaeAssessment(state, SaeSignalKind.UPDATED if worse or outcome_changed or earlier else None, flags)


def _earliest_awareness(state: SaeState, ae: AeData, *, received_at: datetime) -> tuple[SaeState, bool]:
    """Move the clock back when a serious version shows earlier awareness; (state, whether it moved).

    Versions can arrive out of order: an older version processed late may carry the site's first awareness.
    The 24 h clock runs from the earliest awareness of the event as serious, so it only ever moves earlier.
    """
    if not criteria_of(ae) or state.awareness_at is None:
        return state, False
    candidate, basis = clock_start(ae, received_at=received_at)
    if candidate >= state.awareness_at:
        return state, False
    moved = replace(
        state,
        awareness_at=candidate,
        awareness_basis=basis,
        first_serious_version=min(ae.version, state.first_serious_version or ae.version),
    )
    return moved, True


def site_entry_time(envelope: AeReported) -> datetime | None:
    """When the site entered this AE version, when its envelope says so; None when only our receipt tells.

    The CloudEvents `time` is the sender's time of the occurrence. Ingest sets an AE's to the site's awareness, else
    to our receipt (`services.ingest.normalise.clinical_time`: none of the adapters has the entry time there
    today), and neither says when this version was entered: a follow-up entered after a deletion carries the
    awareness of the first report. So `time` counts as the entry time only when it is neither of those and before
    our receipt (a time after receipt is a clock slip); otherwise None, and callers fall back to our receipt,
    which errs on taking a version for a later one (asking the site), never on missing a real follow-up."""
    time = envelope.time
    if time >= envelope.receivedat:
        return None
    if envelope.data.awareness_at is not None and time == envelope.data.awareness_at:
        return None
    return time


def sae_data(
    envelope: ClinicalEnvelopeBase, ae: AeData, *, version: int, state: SaeState, clock_from_ae_id: str | None = None
) -> SaeData:
    """What an SAE signal says: the AE as `ae` (version `version`) describes it, with its folded seriousness and
    the awareness its clock started from (`clock_from_ae_id`: the withdrawn AE this one re-enters, whose clock
    `state` carries); `envelope` is the event that caused the signal."""
    if state.awareness_at is None or state.awareness_basis is None:
        raise ValueError("an SAE signal needs the awareness time its clock starts from")
    return SaeData(
        site_id=envelope.siteid,
        subject_id=envelope.subject,
        ae_id=ae.ae_id,
        ae_version=version,
        term=ae.ctcae_term or ae.term,
        grade=state.max_grade,
        criteria=sorted(state.criteria),
        relatedness=ae.relatedness,
        outcome=state.outcome,
        onset=ae.onset,
        awareness_at=state.awareness_at,
        awareness_basis=state.awareness_basis,
        received_at=envelope.receivedat,
        source_event_id=envelope.id,
        clock_from_ae_id=clock_from_ae_id,
    )
