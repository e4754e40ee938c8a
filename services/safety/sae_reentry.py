"""Pure: a serious AE the site re-entered under a new AE id keeps the reporting clock of the record it took back.

Sites fix a wrongly entered AE (wrong form, wrong log line) by marking it entered in error or deleting it and
entering the event again under a new AE id, often without the awareness date. The new record is the same case:
ICH E2D 5.2 / E2A III.A.2 put day 0 at the sponsor's first receipt of the minimum information, so the new SAE's
24 h clock starts when the first record's did, not when the re-entry arrived (up to a day later).

The link is, in order:
- explicit: the site's retraction names the new id (`RecordStatusData.replaced_by`, from an EDC or connector that
  can say it); then no window applies. Only this link crosses subjects (an AE entered under a mistyped subject id,
  deleted there naming its re-entry under the right subject), and only within the trial (`reentry_links`); there an
  AE id ('AE-2') is not specific, so the re-entry must share a term with the AE deleted or arrive within
  `sae.reentry_lookback_hours` of its deletion (another subject's pneumonia months later is not its re-entry);
- likely: the subject's serious AE of the same CTCAE/verbatim term (see `ae_terms.normalise`; a verbatim synonym or
  MedDRA code counts as the CTCAE term it maps to), taken back within `sae.reentry_lookback_hours` (either side) of
  the new AE's first receipt, naming no other replacement the subject has (a `replaced_by` naming an AE never
  entered is taken as a typo: the real re-entry must not lose the first clock over it), and not beginning after
  the taken-back record was first received (an onset more than a day after it is a second episode of the same
  term, which keeps its own clock).
A withdrawn AE that was itself a re-entry (the case re-entered twice, A -> B -> C) carries its own link's clock:
the chain's first record is the first receipt of the case.
A linked AE takes the earlier of the two clocks, never a later one than its own: a wrong link makes a report look
due sooner, never later, and the finding (`REENTRY_CLOCK`) names both records so the officer and the site can
correct it. The link is computed from the stored data each time a signal is built, never stored: the same data in
any order gives the same clock, and a restore of the first record ends the link (both AEs then stand, each on its
own clock, and notify keeps the earlier deadline it was given).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.safety.ae_terms import map_ae_term, normalise
from services.safety.sae import clock_start, criteria_of
from shared.clock import utc
from shared.events import AeData, AwarenessBasis

REENTRY_CLOCK = "sae_clock_from_withdrawn_ae"
"""A serious AE taken as the re-entry of one the site took back: its reporting clock is the first record's."""


@dataclass(frozen=True)
class StoredVersion:
    """What the rule reads of one stored AE version (`AeVersion`): its payload as sent and when we received it."""

    ae_id: str
    payload: Mapping[str, object]
    received_at: datetime
    version: int = 1
    event_id: str = ""
    subject_id: str | None = None
    """Another subject's AE (a retraction there names the re-entry, `Retraction.subject_id`); None: the re-entry's."""


@dataclass(frozen=True)
class Retraction:
    """The site's standing retraction of an AE (`RecordStatus` with an inactive status)."""

    ae_id: str
    status: str
    changed_at: datetime
    reason: str | None
    replaced_by: str | None
    subject_id: str | None = None
    """The subject the retraction is in when it is not the re-entry's (an AE entered under a mistyped subject id):
    such a retraction links only by naming the re-entry (`replaced_by`), never by term and date."""

    @property
    def label(self) -> str:
        return f"AE {self.ae_id}" + (f" (subject {self.subject_id})" if self.subject_id else "")


@dataclass(frozen=True)
class ReEntry:
    """The withdrawn AE whose clock a new one takes, and why."""

    withdrawn: Retraction
    term: str
    awareness_at: datetime
    awareness_basis: AwarenessBasis
    explicit: bool
    chain: tuple[Retraction, ...] = ()
    """The earlier records taken back that `withdrawn` itself re-entered (A -> B -> C: C's link is B, its chain A),
    latest first: the clock is the first one's (ICH E2D: day 0 is the first receipt of the case)."""

    @property
    def first(self) -> Retraction:
        """The record whose clock the link carries: the first of the chain."""
        return self.chain[-1] if self.chain else self.withdrawn


def terms_of(versions: Iterable[StoredVersion]) -> frozenset[str]:
    """Every normalised term the AE's versions were reported under: verbatim, CTCAE, and the CTCAE term a verbatim
    synonym or MedDRA code maps to (a re-entry as 'Neutropenic fever' is the 'Febrile neutropenia' taken back)."""
    found: set[str] = set()
    for version in versions:
        texts = {key: version.payload.get(key) for key in ("term", "ctcae_term", "meddra_code")}
        for key in ("term", "ctcae_term"):
            text = texts[key]
            if isinstance(text, str) and normalise(text):
                found.add(normalise(text))
        if isinstance(texts["term"], str):
            ctcae, code = texts["ctcae_term"], texts["meddra_code"]
            mapped = map_ae_term(
                texts["term"],
                ctcae_term=ctcae if isinstance(ctcae, str) else None,
                meddra_code=code if isinstance(code, str) else None,
            )
            found.update(normalise(term) for term in mapped.terms)
    return frozenset(found)


def _first_onset(versions: Iterable[StoredVersion]) -> date | None:
    """The earliest full onset date (YYYY-MM-DD) the versions report; None when none gives a full date."""
    onsets = []
    for version in versions:
        text = version.payload.get("onset")
        if isinstance(text, str) and len(text) == 10:
            try:
                onsets.append(date.fromisoformat(text))
            except ValueError:
                continue
    return min(onsets, default=None)


def _began_after(onset: date | None, theirs: Sequence[StoredVersion]) -> bool:
    """An event whose onset is after the withdrawn AE was first received (a day's slack for the site's time zone)
    cannot be the event that record reported: a second episode, not its re-entry."""
    if onset is None or not theirs:
        return False
    return onset > min(utc(v.received_at) for v in theirs).date() + timedelta(days=1)


def serious_clock(versions: Iterable[StoredVersion]) -> tuple[datetime, AwarenessBasis] | None:
    """The clock an AE's SAE had: the earliest start over its serious versions (as `sae.assess_ae` folds it);
    None when no version was serious."""
    starts = []
    for version in versions:
        data = AeData.model_validate(version.payload)
        if criteria_of(data):
            starts.append(clock_start(data, received_at=utc(version.received_at)))
    return min(starts, key=lambda start: start[0]) if starts else None


def reentry_of(
    ae_id: str,
    *,
    own_clock: datetime,
    versions: Sequence[StoredVersion],
    retractions: Sequence[Retraction],
    lookback: timedelta,
    _seen: frozenset[str] = frozenset(),
) -> ReEntry | None:
    """The withdrawn serious AE that `ae_id` re-enters, when its clock is earlier than `own_clock`; else None.

    `versions`: the subject's stored AE versions (all AEs); `retractions`: the subject's standing retractions of
    AEs. Among several candidates the earliest clock wins (the conservative one). A withdrawn AE that was itself the
    re-entry of an earlier one taken back in the subject (the site re-entered the case twice) carries that one's
    clock: the chain's first record is the sponsor's first receipt of the case."""
    retractions = [r for r in retractions if r.subject_id is not None or r.ae_id not in _seen]
    mine = [v for v in versions if v.ae_id == ae_id and v.subject_id is None]
    if not mine:
        return None
    first_received = min(utc(v.received_at) for v in mine)
    my_terms = terms_of(mine)
    explicit = [r for r in retractions if r.replaced_by == ae_id and (r.ae_id != ae_id or r.subject_id is not None)]
    entered = {v.ae_id for v in versions if v.subject_id is None}
    candidates = explicit or [
        r
        for r in retractions
        if r.ae_id != ae_id
        and r.subject_id is None
        and (r.replaced_by is None or r.replaced_by not in entered)  # a replacement named but never entered: a typo
        and lookback > timedelta(0)
        and abs(first_received - utc(r.changed_at)) <= lookback
    ]
    best: ReEntry | None = None
    my_onset = _first_onset(mine)
    for retraction in candidates:
        theirs = [v for v in versions if v.ae_id == retraction.ae_id and v.subject_id == retraction.subject_id]
        shared_terms = sorted(terms_of(theirs) & my_terms)
        if not explicit and (not shared_terms or _began_after(my_onset, theirs)):
            continue
        if retraction.subject_id is not None and not shared_terms and not _within(lookback, first_received, retraction):
            continue  # across subjects an id ('AE-2') is not specific: the same term or the look-back must back it
        clock = serious_clock(theirs)
        if clock is None:
            continue
        chain: tuple[Retraction, ...] = ()
        if retraction.subject_id is None:
            earlier = reentry_of(
                retraction.ae_id,
                own_clock=clock[0],
                versions=versions,
                retractions=[r for r in retractions if r is not retraction],
                lookback=lookback,
                _seen=_seen | {ae_id, retraction.ae_id},
            )
            if earlier is not None:
                clock, chain = (earlier.awareness_at, earlier.awareness_basis), (earlier.withdrawn, *earlier.chain)
        if clock[0] >= utc(own_clock):
            continue
        if best is None or (clock[0], len(chain)) < (best.awareness_at, len(best.chain)):  # a direct link first
            term = shared_terms[0] if shared_terms else next(iter(sorted(terms_of(theirs))), "")
            best = ReEntry(retraction, term, clock[0], clock[1], explicit=bool(explicit), chain=chain)
    return best


def _within(lookback: timedelta, first_received: datetime, retraction: Retraction) -> bool:
    return abs(first_received - utc(retraction.changed_at)) <= lookback


def reentry_detail(ae_id: str, link: ReEntry, *, own_clock: datetime, lookback: timedelta) -> str:
    """The finding for the officer and the site: what was linked, why, and what to do if it is wrong."""
    withdrawn = link.withdrawn
    them = withdrawn.label
    why = (
        f"the site's retraction of {them} names AE {ae_id} as its replacement"
        + (" (an AE entered under another subject's id and re-entered under this one)" if withdrawn.subject_id else "")
        if link.explicit
        else f"same subject, same term ('{link.term}'), {them} taken back within "
        f"{_hours(lookback)} of AE {ae_id}'s first receipt"
    )
    reason = f" ({withdrawn.reason})" if withdrawn.reason else ""
    basis = "site awareness" if link.awareness_basis is AwarenessBasis.SITE else "first receipt"
    first = link.first.label
    chain = ", then ".join(r.label for r in reversed(link.chain))
    earlier = f" ({them} itself re-entered {chain})" if link.chain else ""
    return (
        f"Serious AE {ae_id} is taken as the re-entry of serious {them}, which the site marked "
        f"{withdrawn.status.replace('_', ' ')}{reason} on {_when(withdrawn.changed_at)}: {why}{earlier}. Its 24 h SAE "
        f"clock starts at {first}'s {basis}, {_when(link.awareness_at)}, not at {_when(own_clock)} (ICH E2D: "
        f"day 0 is the sponsor's first receipt of the case). If AE {ae_id} is a different event, the site should "
        f"say so (restore {them} if it stands, or correct the term) and the safety officer "
        f"should judge the report's due date from AE {ae_id}'s own clock."
    )


def _when(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def _hours(span: timedelta) -> str:
    hours = int(span.total_seconds() // 3600)
    return f"{hours // 24} days" if hours % 24 == 0 else f"{hours} h"
