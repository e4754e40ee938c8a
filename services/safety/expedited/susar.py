"""Pure: is an SAE a SUSAR, since when, and what does the change since the last signal mean?

- SUSAR = serious (ICH E2A II.B) + suspected adverse reaction + unexpected (ICH E2A II.A.3; EU CTR Art. 2(2)(33)).
- Related when either the site or the sponsor says so: the sponsor may not downgrade the investigator's
  causality (EU CT-3 7.2.3.1; EU CTR Annex III 2.2); possible, probable and definite count as a reasonable
  possibility, unlikely and not related do not (ICH E2A III.A.1).
- Day 0 is the sponsor's first awareness of a case meeting all criteria (ICH E2A III.A.2; EU CT-3 7.2.3.3):
  the receipt of the AE version that made it one, or the sponsor's own assessment when that made it one.
- A serious AE the site re-entered under a new id (`sae_reentry`) is the same case: the taken-back record's versions
  are the sponsor's earlier knowledge of it, so day 0 is no later than when they made the case a SUSAR.
- A SUSAR that becomes fatal or life-threatening later is an upgrade: 7 days from that knowledge (EU CTR
  Art. 42(2)(c)). New information on a SUSAR is a follow-up. No longer a SUSAR: withdrawn.

The standing is a function of what the sponsor knew and when, not of the order we processed it in: the case
is replayed over the instants at which knowledge arrived (each version's receipt, each assessment), so a
version redelivered late (a rebalance, a batch, a dead-letter replay) lands where its receipt puts it. Day 0
is the start of the last unbroken stretch during which the case, as known then, was a SUSAR; a late version
can move it earlier (its deadlines with it), which is signalled as `clock_earlier`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.safety.expedited.expectedness import Expectedness
from services.safety.sae import merge_criteria
from shared.events import SusarChange

SponsorCausality = Literal["related", "not_related"]
RELATED_SITE = frozenset({"possible", "probable", "definite"})
FATAL_OR_LIFE_THREATENING = frozenset({"death", "life_threatening"})

Propose = Callable[[str, str | None, int | None, bool], Expectedness]
"""The RSI's proposal for (term, MedDRA code, worst grade, fatal)."""


@dataclass(frozen=True)
class CaseFacts:
    """What the rules need about one AE, folded over its versions and the sponsor's assessments."""

    criteria: frozenset[str]
    site_relatedness: str | None
    sponsor_causality: SponsorCausality | None
    expectedness: Expectedness
    ae_version: int

    @property
    def serious(self) -> bool:
        return bool(self.criteria)

    @property
    def related(self) -> bool:
        return self.site_relatedness in RELATED_SITE or self.sponsor_causality == "related"

    @property
    def fatal_or_life_threatening(self) -> bool:
        return bool(self.criteria & FATAL_OR_LIFE_THREATENING)

    @property
    def susar(self) -> bool:
        return self.serious and self.related and self.expectedness == "unexpected"


@dataclass(frozen=True)
class VersionFacts:
    """One stored AE version as the rules read it: what the site said, and when the sponsor received it."""

    version: int
    received_at: datetime
    event_id: str
    criteria: frozenset[str]
    grade: int | None
    relatedness: str | None
    term: str
    meddra_code: str | None
    inherited_from: str | None = None
    """A version of the AE this one re-enters (`sae_reentry`: the site took it back and entered the case again):
    the sponsor knew the case from it, so it counts as earlier knowledge of this case, before every own version."""


@dataclass(frozen=True)
class Assessment:
    """A sponsor's assessment, from when it was made. `value` None for expectedness: the officer's confirmation
    no longer stands (new facts superseded it) and the RSI's proposal counts again."""

    kind: Literal["causality", "expectedness"]
    value: str | None
    at: datetime
    basis: str


@dataclass(frozen=True)
class Standing:
    """The case as all knowledge so far makes it: the state notify's obligations should be built from."""

    facts: CaseFacts
    clock_start: datetime | None = None
    clock_basis: str | None = None
    upgraded_at: datetime | None = None

    @property
    def susar(self) -> bool:
        return self.facts.susar


@dataclass(frozen=True)
class SusarClock:
    """The case's standing as last signalled: the state notify's obligations were built from."""

    susar: bool = False
    clock_start: datetime | None = None
    clock_basis: str | None = None
    fatal_or_life_threatening: bool = False
    upgraded_at: datetime | None = None
    signalled_version: int = 0


@dataclass(frozen=True)
class SusarDecision:
    clock: SusarClock
    change: SusarChange | None
    reason: str


def why(facts: CaseFacts) -> str:
    """One line a safety officer can check: each criterion and what it rests on."""
    serious = ", ".join(sorted(facts.criteria)) or "no"
    site = facts.site_relatedness or "not given"
    sponsor = facts.sponsor_causality.replace("_", " ") if facts.sponsor_causality else "not assessed"
    return f"serious: {serious}; related: site {site}, sponsor {sponsor}; {facts.expectedness}"


def facts_at(
    versions: Sequence[VersionFacts], assessments: Sequence[Assessment], *, at: datetime | None, propose: Propose
) -> CaseFacts:
    """The case as the sponsor knew it at `at` (None: everything so far).

    Criteria accumulate and the worst grade counts (never downgraded); the site's relatedness, term and code are
    the highest version's (the site's latest word); each assessment is the latest made by then."""
    known = sorted((v for v in versions if at is None or v.received_at <= at), key=_in_order)
    made = sorted((a for a in assessments if at is None or a.at <= at), key=lambda a: a.at)
    causality = next((a.value for a in reversed(made) if a.kind == "causality"), None)
    confirmed = next((a for a in reversed(made) if a.kind == "expectedness"), None)
    criteria = merge_criteria(*(v.criteria for v in known)) if known else frozenset()
    grades = [v.grade for v in known if v.grade is not None]
    if confirmed is not None and confirmed.value in ("expected", "unexpected"):
        expectedness: Expectedness = "expected" if confirmed.value == "expected" else "unexpected"
    elif known:
        latest = known[-1]
        expectedness = propose(latest.term, latest.meddra_code, max(grades) if grades else None, "death" in criteria)
    else:
        expectedness = "unexpected"
    return CaseFacts(
        criteria=criteria,
        site_relatedness=known[-1].relatedness if known else None,
        sponsor_causality=_causality(causality),
        expectedness=expectedness,
        ae_version=max((v.version for v in known if v.inherited_from is None), default=0),
    )


def _in_order(version: VersionFacts) -> tuple[bool, int]:
    """The re-entered record's versions first (the site's earlier word on the case), then the AE's own."""
    return version.inherited_from is None, version.version


def standing(versions: Sequence[VersionFacts], assessments: Sequence[Assessment], *, propose: Propose) -> Standing:
    """Replay the case over the instants knowledge arrived; the same versions and assessments give the same
    standing whatever order they were stored in.

    Day 0: the first instant of the last unbroken SUSAR stretch (a stretch broken by the site's or the sponsor's
    word, for example 'not related' in a later version, starts again when the case qualifies again: as in
    order). Fatal or life-threatening known after day 0: `upgraded_at` is the first instant of the stretch it
    was known, the 7-day clock's start (EU CTR Art. 42(2)(c))."""
    final = facts_at(versions, assessments, at=None, propose=propose)
    if not final.susar:
        return Standing(final)
    start: tuple[datetime, str] | None = None
    fatal_since: datetime | None = None
    for instant, basis in _instants(versions, assessments):
        now = facts_at(versions, assessments, at=instant, propose=propose)
        if not now.susar:
            start, fatal_since = None, None
            continue
        if start is None:
            start = (instant, basis)
        if now.fatal_or_life_threatening and fatal_since is None:
            fatal_since = instant
    if start is None:  # cannot happen: the last instant holds all knowledge; kept for the type checker
        return Standing(final)
    upgraded = fatal_since if fatal_since is not None and fatal_since > start[0] else None
    return Standing(final, clock_start=start[0], clock_basis=start[1], upgraded_at=upgraded)


def _instants(versions: Sequence[VersionFacts], assessments: Sequence[Assessment]) -> list[tuple[datetime, str]]:
    """Each instant knowledge arrived, in time order, with what arrived (a version first when both did at once,
    the lowest version of those received together)."""
    by_instant: dict[datetime, str] = {}
    for v in sorted(versions, key=lambda v: (v.received_at, *_in_order(v))):
        of = f"AE {v.inherited_from} (re-entered as this AE) version" if v.inherited_from else "AE version"
        by_instant.setdefault(v.received_at, f"sponsor receipt of {of} {v.version} (event {v.event_id})")
    for a in sorted(assessments, key=lambda a: a.at):
        by_instant.setdefault(a.at, a.basis)
    return sorted(by_instant.items())


def decide(prior: SusarClock, new: Standing) -> SusarDecision:
    """What changed since the last signal, as one signal: the new standing becomes the signalled one.

    - not a SUSAR -> SUSAR: detected; SUSAR -> not: withdrawn;
    - day 0 later than signalled (a late version shows the case stopped qualifying in between and qualified
      again): withdrawn, then detected afresh; `decide` says `detected` and the caller sends both;
    - day 0, or the upgrade's 7-day start, earlier than signalled (a version received earlier was processed
      later): clock_earlier, whatever else changed, so notify moves every deadline earlier;
    - now fatal or life-threatening: upgraded; a newer AE version: follow-up; else nothing."""
    facts = new.facts
    reason = why(facts)
    if not new.susar:
        if not prior.susar:
            return SusarDecision(prior, None, reason)
        return SusarDecision(SusarClock(signalled_version=prior.signalled_version), "withdrawn", reason)
    clock = SusarClock(
        susar=True,
        clock_start=new.clock_start,
        clock_basis=new.clock_basis,
        fatal_or_life_threatening=facts.fatal_or_life_threatening,
        upgraded_at=new.upgraded_at,
        signalled_version=max(prior.signalled_version, facts.ae_version),
    )
    if not prior.susar or prior.clock_start is None or new.clock_start is None:
        return SusarDecision(clock, "detected", reason)
    if new.clock_start > prior.clock_start:
        return SusarDecision(clock, "detected", f"qualifies again since {new.clock_start.isoformat()}; {reason}")
    if new.clock_start < prior.clock_start or _earlier(new, prior):
        day0 = f"day 0 now {new.clock_start.isoformat()} ({new.clock_basis})"
        upgrade = f"; fatal or life-threatening known {new.upgraded_at.isoformat()}" if new.upgraded_at else ""
        return SusarDecision(clock, "clock_earlier", f"earlier knowledge processed late: {day0}{upgrade}; {reason}")
    if facts.fatal_or_life_threatening and not prior.fatal_or_life_threatening:
        return SusarDecision(clock, "upgraded", f"now fatal or life-threatening; {reason}")
    if facts.ae_version > prior.signalled_version:
        follow = f"follow-up information (AE version {facts.ae_version}); {reason}"
        return SusarDecision(clock, "follow_up", follow)
    if clock != prior:  # e.g. the basis text of the same instant: keep the stored state current, nothing to say
        return SusarDecision(clock, None, reason)
    return SusarDecision(prior, None, reason)


def _earlier(new: Standing, prior: SusarClock) -> bool:
    """The 7-day clock of a case already known fatal or life-threatening now starts earlier than signalled."""
    if not (new.facts.fatal_or_life_threatening and prior.fatal_or_life_threatening):
        return False
    was = prior.upgraded_at or prior.clock_start
    now = new.upgraded_at or new.clock_start
    return was is not None and now is not None and now < was


def _causality(value: str | None) -> SponsorCausality | None:
    if value == "related":
        return "related"
    if value == "not_related":
        return "not_related"
    return None
