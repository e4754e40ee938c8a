"""Pure: is an SAE a SUSAR, and what does a new fact do to its regulatory clock?

- SUSAR = serious (ICH E2A II.B) + suspected adverse reaction + unexpected (ICH E2A II.A.3; EU CTR Art. 2(2)(33)).
- Related when either the site or the sponsor says so: the sponsor may not downgrade the investigator's
  causality (EU CT-3 7.2.3.1; EU CTR Annex III 2.2); possible, probable and definite count as a reasonable
  possibility, unlikely and not related do not (ICH E2A III.A.1).
- Day 0 is the sponsor's first awareness of a case meeting all criteria (ICH E2A III.A.2; EU CT-3 7.2.3.3):
  our receipt of the AE version that made it one, or the sponsor's own assessment when that made it one.
- A SUSAR that becomes fatal or life-threatening later is an upgrade: 7 days from that knowledge (EU CTR
  Art. 42(2)(c)). New information on a SUSAR is a follow-up. No longer a SUSAR: withdrawn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from services.safety.expedited.expectedness import Expectedness
from shared.events import SusarChange

SponsorCausality = Literal["related", "not_related"]
RELATED_SITE = frozenset({"possible", "probable", "definite"})
FATAL_OR_LIFE_THREATENING = frozenset({"death", "life_threatening"})


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


def decide(prior: SusarClock, facts: CaseFacts, *, at: datetime, basis: str) -> SusarDecision:
    """Fold one new fact (`at`: when the sponsor learnt it; `basis`: what it was) into the clock."""
    reason = why(facts)
    if not prior.susar:
        if not facts.susar:
            return SusarDecision(prior, None, reason)
        clock = SusarClock(
            susar=True,
            clock_start=at,
            clock_basis=basis,
            fatal_or_life_threatening=facts.fatal_or_life_threatening,
            signalled_version=facts.ae_version,
        )
        return SusarDecision(clock, "detected", reason)
    if not facts.susar:
        return SusarDecision(SusarClock(signalled_version=prior.signalled_version), "withdrawn", reason)
    if facts.fatal_or_life_threatening and not prior.fatal_or_life_threatening:
        clock = replace(
            prior,
            fatal_or_life_threatening=True,
            upgraded_at=at,
            signalled_version=max(prior.signalled_version, facts.ae_version),
        )
        return SusarDecision(clock, "upgraded", f"now fatal or life-threatening; {reason}")
    if facts.ae_version > prior.signalled_version:
        clock = replace(prior, signalled_version=facts.ae_version)
        return SusarDecision(clock, "follow_up", f"follow-up information (AE version {facts.ae_version}); {reason}")
    return SusarDecision(prior, None, reason)
