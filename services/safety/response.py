"""Pure: a subject's haematological response (CR/PR) by the protocol's definition, at any `now`.

"Dual-test compliance + 7 days without blood product transfusion": a response level is reached when two
blood counts at least `confirm_min_hours` apart both show every lineage at that level, with no transfusion
in the `transfusion_free_days` before the first of them and none between them. It holds until a count shows
a lineage below the level, or a transfusion is given; then it is lost (a CR may fall to a PR that still holds).

Decisions where the protocol text is silent (see the protocol file's comments):
- a *count* is the results collected at one time; only a count carrying every lineage can start or confirm a
  response, but any result below the level ends one (a lone platelet count of 30 is news);
- boundaries are inclusive: counts exactly 48 h apart confirm, a transfusion exactly 7 x 24 h before the
  first count is outside the transfusion-free period; a transfusion at the same instant as a count comes first;
- the response starts (and its duration runs) from the first qualifying count, and is *confirmed* at the second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from shared.events import ResponseLevel
from shared.protocol import ResponseRules

RANK: Mapping[ResponseLevel, int] = {"none": 0, "partial": 1, "complete": 2}
LABEL: Mapping[ResponseLevel, str] = {"none": "no response", "partial": "PR", "complete": "CR"}
SECONDS_PER_DAY = Decimal(86400)


@dataclass(frozen=True)
class Count:
    """One blood count: lineage name (as the protocol names it) -> value in the term's SI unit."""

    collected_at: datetime
    values: Mapping[str, Decimal]


@dataclass(frozen=True)
class Transfusion:
    administered_at: datetime
    product: str


@dataclass(frozen=True)
class Episode:
    """A confirmed response at one level: from its first count, confirmed at the second, perhaps ended."""

    level: ResponseLevel
    since: datetime
    confirmed_at: datetime
    ended_at: datetime | None
    end_reason: str | None


@dataclass(frozen=True)
class ResponseAssessment:
    level: ResponseLevel
    since: datetime | None
    confirmed_at: datetime | None
    duration_days: Decimal | None
    awaiting: ResponseLevel
    """The best level a run of counts has reached without its confirming count yet ("none" if no such run)."""
    awaiting_since: datetime | None
    reason: str
    episodes: tuple[Episode, ...]
    """The last confirmed episode of each level (held or ended), for the history and the loss alert."""


@dataclass(frozen=True)
class ResponseLoss:
    previous_level: ResponseLevel
    previous_since: datetime | None
    previous_confirmed_at: datetime | None
    level: ResponseLevel
    lost_at: datetime
    duration_days: Decimal
    reason: str


def lineage_level(rules: ResponseRules, lineage: str, value: Decimal) -> ResponseLevel:
    threshold = rules.lineages[lineage]
    if value >= threshold.complete_min:
        return "complete"
    if value > threshold.partial_above:
        return "partial"
    return "none"


def count_level(rules: ResponseRules, count: Count) -> tuple[ResponseLevel, bool, str]:
    """(the lowest level among the count's lineages, whether it carries every lineage, the limiting lineage)."""
    known = {name: v for name, v in count.values.items() if name in rules.lineages}
    if not known:
        return "none", False, ""
    levels = {name: lineage_level(rules, name, v) for name, v in known.items()}
    lowest = min(levels, key=lambda name: (RANK[levels[name]], name))
    return levels[lowest], set(known) == set(rules.lineages), lowest


def days_between(start: datetime, end: datetime) -> Decimal:
    return (Decimal(int((end - start).total_seconds())) / SECONDS_PER_DAY).quantize(Decimal("0.1"))


def _below(rules: ResponseRules, count: Count, lineage: str, level: ResponseLevel) -> str:
    threshold = rules.lineages[lineage]
    limit = f">= {threshold.complete_min}" if level == "complete" else f"> {threshold.partial_above}"
    return (
        f"{lineage} {count.values[lineage]} at {count.collected_at.isoformat()} is below {LABEL[level]} level ({limit})"
    )


def _transfused(product: str, at: datetime) -> str:
    return f"{product.replace('_', ' ')} transfusion at {at.isoformat()}"


@dataclass
class _Run:
    start: Count | None = None
    confirmed_at: datetime | None = None


CountLevels = Mapping[int, tuple[ResponseLevel, bool, str]]
"""count_level of each count by id(count): computed once when a subject is assessed at several moments."""


def count_levels(rules: ResponseRules, counts: Sequence[Count]) -> dict[int, tuple[ResponseLevel, bool, str]]:
    return {id(count): count_level(rules, count) for count in counts}


def _episodes(
    rules: ResponseRules,
    level: ResponseLevel,
    counts: Sequence[Count],
    transfusions: Sequence[Transfusion],
    levels: CountLevels,
) -> tuple[Episode | None, _Run]:
    """Walk the counts and transfusions in time order for one level: its last confirmed episode, and the run open
    at the end (started, perhaps confirmed)."""
    events: list[tuple[datetime, int, Count | Transfusion]] = [
        (t.administered_at, 0, t) for t in transfusions if t.product in rules.transfusion_products
    ]
    events += [(c.collected_at, 1, c) for c in counts]
    events.sort(key=lambda e: (e[0], e[1]))
    free = timedelta(days=rules.transfusion_free_days)
    confirm = timedelta(hours=rules.confirm_min_hours)
    last: Episode | None = None
    run = _Run()
    last_transfusion: datetime | None = None

    def end(at: datetime, why: Callable[[], str]) -> None:
        """`why`: said only when a confirmed episode ends (most counts below a level end no episode)."""
        nonlocal last, run
        if run.start is not None and run.confirmed_at is not None:
            last = Episode(level, run.start.collected_at, run.confirmed_at, at, why())
        run = _Run()

    for moment, _, item in events:
        if isinstance(item, Transfusion):
            end(moment, partial(_transfused, item.product, moment))
            last_transfusion = moment
            continue
        reached, full, limiting = levels[id(item)]
        if limiting and RANK[reached] < RANK[level]:
            end(moment, partial(_below, rules, item, limiting, level))
            continue
        if not full:
            continue  # at level in what it carries, but cannot start or confirm a response
        if run.start is None:
            if last_transfusion is None or moment - last_transfusion >= free:
                run.start = item
        elif run.confirmed_at is None and moment - run.start.collected_at >= confirm:
            run.confirmed_at = moment
    if run.start is not None and run.confirmed_at is not None:
        last = Episode(level, run.start.collected_at, run.confirmed_at, None, None)
    return last, run


def assess_response(
    rules: ResponseRules,
    *,
    counts: Sequence[Count],
    transfusions: Sequence[Transfusion],
    now: datetime,
    levels: CountLevels | None = None,
) -> ResponseAssessment:
    """The response as of `now`, from the counts collected and the transfusions given by then."""
    counts = [c for c in counts if c.collected_at <= now]
    levels = levels if levels is not None else count_levels(rules, counts)
    transfusions = [t for t in transfusions if t.administered_at <= now]
    episodes: list[Episode] = []
    held: Episode | None = None
    awaiting: ResponseLevel = "none"
    awaiting_since: datetime | None = None
    for level in ("complete", "partial"):
        episode, run = _episodes(rules, level, counts, transfusions, levels)
        if episode is not None:
            episodes.append(episode)
            if episode.ended_at is None and held is None:
                held = episode
        unconfirmed = run.start is not None and run.confirmed_at is None and awaiting == "none"
        if unconfirmed and run.start is not None and (held is None or RANK[level] > RANK[held.level]):
            awaiting, awaiting_since = level, run.start.collected_at
    if held is None:
        reason = "no response confirmed"
        if awaiting != "none":
            reason = f"{LABEL[awaiting]}-level count since {awaiting_since}: awaiting its confirming count"
        return ResponseAssessment("none", None, None, None, awaiting, awaiting_since, reason, tuple(episodes))
    reason = (
        f"{LABEL[held.level]} since {held.since.isoformat()}, confirmed {held.confirmed_at.isoformat()} "
        f"(two counts >= {rules.confirm_min_hours} h apart, no transfusion for {rules.transfusion_free_days} days)"
    )
    return ResponseAssessment(
        held.level,
        held.since,
        held.confirmed_at,
        days_between(held.since, now),
        awaiting,
        awaiting_since,
        reason,
        tuple(episodes),
    )


def response_loss(
    *,
    previous_level: ResponseLevel,
    previous_since: datetime | None,
    previous_confirmed_at: datetime | None,
    current: ResponseAssessment,
    now: datetime,
) -> ResponseLoss | None:
    """A confirmed response now lower than it was: lost (or a CR fallen to a PR), with when and why."""
    if RANK[current.level] >= RANK[previous_level]:
        return None
    ended = next((e for e in current.episodes if e.level == previous_level and e.ended_at is not None), None)
    lost_at = ended.ended_at if ended is not None and ended.ended_at is not None else now
    reason = (
        ended.end_reason
        if ended is not None and ended.end_reason
        else "no longer confirmed by the records now on file (a late, corrected or withdrawn count or transfusion)"
    )
    duration = days_between(previous_since, lost_at) if previous_since is not None else Decimal(0)
    return ResponseLoss(
        previous_level=previous_level,
        previous_since=previous_since,
        previous_confirmed_at=previous_confirmed_at,
        level=current.level,
        lost_at=lost_at,
        duration_days=duration,
        reason=reason,
    )


def unseen_loss(current: ResponseAssessment, *, signalled_since: datetime | None) -> ResponseLoss | None:
    """A confirmed response that ended before the stored state ever held it (its counts and the transfusion that
    ended it came in one batch, or out of order): lost all the same. `signalled_since`: the start of the last
    response whose loss was already signalled (each is signalled once)."""
    ended = [
        e
        for e in current.episodes
        if e.ended_at is not None
        and RANK[e.level] > RANK[current.level]
        and (signalled_since is None or e.since > signalled_since)
    ]
    episode = max(ended, key=lambda e: (RANK[e.level], e.since), default=None)
    if episode is None or episode.ended_at is None:
        return None
    return ResponseLoss(
        previous_level=episode.level,
        previous_since=episode.since,
        previous_confirmed_at=episode.confirmed_at,
        level=current.level,
        lost_at=episode.ended_at,
        duration_days=days_between(episode.since, episode.ended_at),
        reason=episode.end_reason or "ended",
    )
