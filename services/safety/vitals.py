"""Pure: CTCAE v5.0 findings from vital signs, which of them are news, and the infusion-day monitoring gaps.

What CTCAE v5.0 grades from a measurement (adult criteria; this is an adult trial):
- Fever: 38.0 - 39.0 C grade 1, > 39.0 - 40.0 grade 2, > 40.0 for <= 24 h grade 3, > 40.0 for > 24 h grade 4.
  "For > 24 h" is read from consecutive readings above 40.0 C: the run is assumed unbroken between them (no
  reading at or below 40.0 in between), the cautious reading. So a later reading's grade depends on the readings
  before it in its run: a change to one set grades them again (`judge_change`).
- Hypertension: systolic 120 - 139 or diastolic 80 - 89 mm Hg grade 1; 140 - 159 or 90 - 99 grade 2; >= 160 or
  >= 100 grade 3; grade 4 has no pressure criterion. Every grade also has clinical criteria (previous pressure,
  symptoms, intervention, life-threatening consequences), so a pressure gives "at least grade N" and the
  finding says the investigator must grade the rest.
- Hypotension: CTCAE grades it by intervention only (grade 1 "asymptomatic, intervention not indicated").
  No pressure cut-off exists: a protocol may set its own screen (`hypotension_systolic_below`), reported as
  "at least grade 1, grade it clinically", never as a CTCAE cut-off.
SpO2, heart rate and respiratory rate have no CTCAE grade by value (Hypoxia's "< 88 %" is an example inside
clinical criteria): they are monitored for completeness, not graded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from shared.protocol import InfusionVitals, VitalSign

FEVER_GRADE1_FROM = Decimal("38.0")
FEVER_GRADE2_ABOVE = Decimal("39.0")
FEVER_GRADE3_ABOVE = Decimal("40.0")
FEVER_GRADE4_AFTER = timedelta(hours=24)
SYSTOLIC_GRADES = ((Decimal(160), 3), (Decimal(140), 2), (Decimal(120), 1))
DIASTOLIC_GRADES = ((Decimal(100), 3), (Decimal(90), 2), (Decimal(80), 1))
SIGN_LABELS: dict[VitalSign, str] = {
    "temperature_c": "temperature",
    "systolic_bp": "systolic BP",
    "diastolic_bp": "diastolic BP",
    "heart_rate": "heart rate",
    "respiratory_rate": "respiratory rate",
    "spo2": "SpO2",
}
SIGN_UNITS: dict[VitalSign, str] = {
    "temperature_c": "C",
    "systolic_bp": "mm Hg",
    "diastolic_bp": "mm Hg",
    "heart_rate": "/min",
    "respiratory_rate": "/min",
    "spo2": "%",
}


@dataclass(frozen=True)
class Reading:
    vitals_id: str
    measured_at: datetime
    signs: dict[VitalSign, Decimal]


@dataclass(frozen=True)
class VitalsFinding:
    term: str
    grade: int
    floor: bool
    """The lowest grade the measurement allows: CTCAE's clinical criteria may make it worse."""
    test: str
    """The SDTM VSTESTCD the grade comes from (TEMP, SYSBP, DIABP)."""
    value: str
    unit: str
    reason: str


def fever(reading: Reading, history: Sequence[Reading]) -> VitalsFinding | None:
    """Fever by temperature; grade 4 when the run of readings above 40.0 C ending here lasts more than 24 h."""
    temperature = reading.signs.get("temperature_c")
    if temperature is None or temperature < FEVER_GRADE1_FROM:
        return None
    value = str(temperature)
    if temperature <= FEVER_GRADE2_ABOVE:
        return VitalsFinding("Fever", 1, False, "TEMP", value, "C", f"{value} C is 38.0 - 39.0 C: grade 1")
    if temperature <= FEVER_GRADE3_ABOVE:
        return VitalsFinding("Fever", 2, False, "TEMP", value, "C", f"{value} C is > 39.0 - 40.0 C: grade 2")
    since = _above_40_since(reading, history)
    hours = (reading.measured_at - since) / timedelta(hours=1)
    if reading.measured_at - since > FEVER_GRADE4_AFTER:
        reason = f"{value} C, above 40.0 C for {hours:.1f} h (> 24 h) by consecutive readings: grade 4"
        return VitalsFinding("Fever", 4, False, "TEMP", value, "C", reason)
    reason = f"{value} C is > 40.0 C, for {hours:.1f} h so far (<= 24 h): grade 3 (grade 4 if it lasts > 24 h)"
    return VitalsFinding("Fever", 3, False, "TEMP", value, "C", reason)


def _above_40_since(reading: Reading, history: Sequence[Reading]) -> datetime:
    earlier = sorted(
        (r for r in history if r.measured_at < reading.measured_at and "temperature_c" in r.signs),
        key=lambda r: r.measured_at,
        reverse=True,
    )
    since = reading.measured_at
    for previous in earlier:
        if previous.signs["temperature_c"] <= FEVER_GRADE3_ABOVE:
            break
        since = previous.measured_at
    return since


def hypertension(reading: Reading) -> VitalsFinding | None:
    """The pressure half of CTCAE's adult Hypertension grades: always a floor."""
    graded = []
    for sign, test, bands in (("systolic_bp", "SYSBP", SYSTOLIC_GRADES), ("diastolic_bp", "DIABP", DIASTOLIC_GRADES)):
        value = reading.signs.get(sign)  # type: ignore[call-overload]
        grade = next((g for bound, g in bands if value is not None and value >= bound), None)
        if value is not None and grade is not None:
            graded.append((grade, test, value))
    if not graded:
        return None
    grade, test, value = max(graded, key=lambda g: g[0])
    pressure = _pressure(reading)
    reason = (
        f"BP {pressure} mm Hg meets the pressure criterion of Hypertension grade {grade}; CTCAE's clinical "
        "criteria (previous pressure, symptoms, intervention, life-threatening consequences) need the "
        "investigator's grading"
    )
    return VitalsFinding("Hypertension", grade, True, test, str(value), "mm Hg", reason)


def hypotension(reading: Reading, *, systolic_below: Decimal | None) -> VitalsFinding | None:
    """The protocol's low-pressure screen (not a CTCAE cut-off): at least grade 1, to be graded clinically."""
    systolic = reading.signs.get("systolic_bp")
    if systolic_below is None or systolic is None or systolic >= systolic_below:
        return None
    reason = (
        f"systolic {systolic} mm Hg is below the protocol's screen of {systolic_below} mm Hg "
        f"(BP {_pressure(reading)}); "
        "CTCAE v5.0 grades Hypotension by intervention only: at least grade 1, grade it clinically"
    )
    return VitalsFinding("Hypotension", 1, True, "SYSBP", str(systolic), "mm Hg", reason)


def _pressure(reading: Reading) -> str:
    systolic, diastolic = reading.signs.get("systolic_bp"), reading.signs.get("diastolic_bp")
    return f"{systolic if systolic is not None else '?'}/{diastolic if diastolic is not None else '?'}"


def findings(reading: Reading, history: Sequence[Reading], *, rules: InfusionVitals) -> list[VitalsFinding]:
    found = [
        fever(reading, history),
        hypertension(reading),
        hypotension(reading, systolic_below=rules.hypotension_systolic_below),
    ]
    return [f for f in found if f is not None]


def news(
    reading: Reading, history: Sequence[Reading], *, rules: InfusionVitals, before: Reading | None = None
) -> list[tuple[VitalsFinding, int | None]]:
    """The findings to signal, each with the worst grade of its term nearby (None: none).

    A finding is news at or above the protocol's `min_grade` for its term (terms without one are never
    signalled) and when worse than every other reading of the same term within `repeat_after_hours` either
    side: a fever measured every 15 minutes pages once, and again only when it gets worse. `before`: the set as it
    stood before the site's correction: a finding no worse than it gave then is not news (a lower grade that stands
    is said by the withdrawal of the higher, `withdrawals`), as a lab result corrected within its grade pages nothing.
    """
    gave: dict[str, int] = {}
    if before is not None:
        earlier = [h for h in history if h.vitals_id != before.vitals_id]
        gave = {f.term: f.grade for f in findings(before, earlier, rules=rules)}
    span = timedelta(hours=rules.repeat_after_hours)
    nearby = [
        r for r in history if r.vitals_id != reading.vitals_id and abs(r.measured_at - reading.measured_at) <= span
    ]
    signalled = []
    for finding in findings(reading, history, rules=rules):
        threshold = rules.min_grade.get(finding.term)  # type: ignore[call-overload]
        if threshold is None or finding.grade < threshold:
            continue
        others = [
            f.grade
            for r in nearby
            for f in findings(r, [h for h in history if h.vitals_id != r.vitals_id], rules=rules)
            if f.term == finding.term
        ]
        worst = max(others, default=None)
        if (worst is None or finding.grade > worst) and finding.grade > gave.get(finding.term, 0):
            signalled.append((finding, worst))
    return signalled


@dataclass(frozen=True)
class Withdrawal:
    """A finding a vitals set no longer supports (`finding`, as the set graded before the change), and the worst
    finding of its term that stands near it (`standing`: the reading and its finding), if any."""

    finding: VitalsFinding
    standing: tuple[Reading, VitalsFinding] | None


def withdrawals(
    before: Reading, after: Reading | None, history: Sequence[Reading], *, rules: InfusionVitals
) -> list[Withdrawal]:
    """The findings at the protocol's grade that set `before` gave and its correction `after` (None: taken back) no
    longer does, so that a review opened for a value the site took back stops (as a lab result's does).

    What stands is the worst finding of the term at the protocol's grade, from the set as corrected or another
    reading within `repeat_after_hours` of it (the span `news` treats as one episode). Nothing is withdrawn while
    the set still gives the grade, value and time it gave, or a worse one stands near it (that one paged, not this
    set). An equal grade from another reading, or from the set at another value or time, is withdrawn with it
    standing: the alert must show a reading that stands, what it measured and when (a fever keyed on the infusion
    day but measured on day 3 points to infection). `history`: the subject's active readings after the change."""
    span = timedelta(hours=rules.repeat_after_hours)
    others = [r for r in history if r.vitals_id != before.vitals_id]
    candidates = [r for r in others if abs(r.measured_at - before.measured_at) <= span]
    candidates += [after] if after is not None else []
    graded = _Graded(history, rules)
    found = []
    for finding in findings(before, others, rules=rules):
        threshold = rules.min_grade.get(finding.term)  # type: ignore[call-overload]
        if threshold is None or finding.grade < threshold:
            continue
        worst = _worst_standing(graded, candidates, finding.term, threshold, own=before.vitals_id)
        if worst is not None:
            reading, other = worst
            same = reading.vitals_id == before.vitals_id and reading.measured_at == before.measured_at
            if other.grade > finding.grade or (
                other.grade == finding.grade and same and _same_shown(finding.term, reading, before)
            ):
                continue  # a worse finding stands near it, or the set still gives the grade, value and time it gave
        found.append(Withdrawal(finding, worst))
    return found


SHOWN_SIGNS: dict[str, tuple[VitalSign, ...]] = {
    "Fever": ("temperature_c",),
    "Hypotension": ("systolic_bp", "diastolic_bp"),
    "Hypertension": ("systolic_bp", "diastolic_bp"),
}
"""The signs a finding's alert shows (a pressure is shown whole, though graded by one of its numbers)."""


def _same_shown(term: str, one: Reading, other: Reading) -> bool:
    """Whether two readings show the same of a term's finding (39.2 C re-sent as 39.20 C: nothing shown changes; 84/50
    corrected to 84/38 changes the pressure shown, though the screen reads the systolic)."""
    signs = SHOWN_SIGNS.get(term)
    if signs is None:
        return one.signs == other.signs
    return all(one.signs.get(sign) == other.signs.get(sign) for sign in signs)


# --- a change to one set, and the readings graded with it --------------------------------------------------


@dataclass(frozen=True)
class News:
    """A finding to signal, read from `reading`; `previous`: the worst grade of its term near it before (None: none)."""

    reading: Reading
    finding: VitalsFinding
    previous: int | None


@dataclass(frozen=True)
class Judgement:
    """What a change to one vitals set signals: each withdrawal with the set whose finding no longer stands (as it
    stood before the change: the set changed, or another graded with it), and the findings that are news."""

    withdrawn: list[tuple[Reading, Withdrawal]]
    news: list[News]


def judge_change(
    vitals_id: str, before: Sequence[Reading], after: Sequence[Reading], *, rules: InfusionVitals
) -> Judgement:
    """A vitals set new, corrected, taken back or restored: what its own findings signal (`withdrawals`, `news`), and
    what the change does to the readings graded with it (`dependents`: a later reading of a run above 40.0 C, whose
    grade 4 reads the run back to its start). `before`, `after`: the subject's active readings around the change.

    A grade a dependent no longer gives is withdrawn naming that reading (notify withdraws only from an alert showing
    it, so each is named: which one paged depends on the order they came in). A worse grade now standing is news
    when worse than every grade of its term near it before and than the unchanged ones near it now; one page per term
    and change: the worst (the set's own on a tie, else the latest reading), so the alert ends on what stands."""
    old, new = _find(before, vitals_id), _find(after, vitals_id)
    withdrawn = [(old, w) for w in withdrawals(old, new, after, rules=rules)] if old is not None else []
    own = [News(new, f, previous) for f, previous in news(new, after, rules=rules, before=old)] if new else []
    then, now = _Graded(before, rules), _Graded(after, rules)
    span = timedelta(hours=rules.repeat_after_hours)
    changed = [r for r in (old, new) if r is not None]
    others = [r for r in after if r.vitals_id != vitals_id]
    graded_again = dependents(changed, others)
    regraded: list[News] = []
    for term, threshold in rules.min_grade.items():
        rising = []
        for reading in graded_again:
            was, gives = then.finding(reading, term), now.grade(reading, term)
            if was is not None and was.grade >= threshold and gives < was.grade:
                withdrawn += [(reading, w) for w in _regrade_withdrawal(reading, was, threshold, now, span)]
            elif gives >= threshold and gives > then.grade(reading, term):
                rising.append(reading)
        for reading in rising:
            found = now.finding(reading, term)
            prior = max((then.grade(r, term) for r in then.near(reading, span)), default=0)
            kept = [now.grade(r, term) for r in now.near(reading, span) if r not in rising]
            if found is not None and found.grade > max([prior, *kept]):
                regraded.append(News(reading, found, prior or None))
    return Judgement(withdrawn, _worst_per_term(own, regraded))


def dependents(changed: Sequence[Reading], others: Sequence[Reading]) -> list[Reading]:
    """The readings whose grade can depend on a set measured at `changed`'s times (before and after a correction):
    those after it, up to the first at or below 40.0 C (a grade 4 fever reads the run back to its start; one at or
    below 40.0 C starts it again, whatever came before). Bounded by the run, however long ago it started."""
    timed = sorted((r for r in others if "temperature_c" in r.signs), key=lambda r: r.measured_at)
    found: dict[str, Reading] = {}
    for start in {c.measured_at for c in changed}:
        for reading in (r for r in timed if r.measured_at > start):
            if reading.signs["temperature_c"] <= FEVER_GRADE3_ABOVE:
                break
            found[reading.vitals_id] = reading
    return sorted(found.values(), key=lambda r: r.measured_at)


def _regrade_withdrawal(
    reading: Reading, finding: VitalsFinding, threshold: int, now: _Graded, span: timedelta
) -> list[Withdrawal]:
    """`reading`'s `finding`, which it no longer gives, withdrawn with the worst of its term that stands near it (as
    `withdrawals`); nothing when a worse one stands (that one paged)."""
    worst = _worst_standing(now, now.near(reading, span), finding.term, threshold, own=reading.vitals_id)
    return [] if worst is not None and worst[1].grade > finding.grade else [Withdrawal(finding, worst)]


def _worst_standing(
    graded: _Graded, readings: Sequence[Reading], term: str, threshold: int, *, own: str
) -> tuple[Reading, VitalsFinding] | None:
    """The worst finding of `term` at the protocol's grade among `readings`, and its reading: on a tie the set `own`
    (the one whose finding is withdrawn), else the latest."""
    standing = [(r, f) for r in readings if (f := graded.finding(r, term)) and f.grade >= threshold]
    return max(standing, key=lambda s: (s[1].grade, s[0].vitals_id == own, s[0].measured_at), default=None)


def _worst_per_term(own: list[News], regraded: list[News]) -> list[News]:
    chosen: dict[str, tuple[tuple[int, bool, datetime], News]] = {}
    for item in [*own, *regraded]:
        key = (item.finding.grade, item in own, item.reading.measured_at)
        if item.finding.term not in chosen or key > chosen[item.finding.term][0]:
            chosen[item.finding.term] = (key, item)
    return [item for _, item in chosen.values()]


class _Graded:
    """The subject's active readings at one moment, each graded once: a run above 40.0 C grades its readings from
    the same history, and a change re-reads them before and after."""

    def __init__(self, readings: Sequence[Reading], rules: InfusionVitals) -> None:
        self._readings = list(readings)
        self._rules = rules
        self._found: dict[str, dict[str, VitalsFinding]] = {}

    def finding(self, reading: Reading, term: str) -> VitalsFinding | None:
        if reading.vitals_id not in self._found:
            others = [r for r in self._readings if r.vitals_id != reading.vitals_id]
            self._found[reading.vitals_id] = {f.term: f for f in findings(reading, others, rules=self._rules)}
        return self._found[reading.vitals_id].get(term)

    def grade(self, reading: Reading, term: str) -> int:
        """0: none."""
        found = self.finding(reading, term)
        return found.grade if found is not None else 0

    def near(self, reading: Reading, span: timedelta) -> list[Reading]:
        """The readings within `span` of `reading`'s time, itself included when it is one of them."""
        return [r for r in self._readings if abs(r.measured_at - reading.measured_at) <= span]


def _find(readings: Sequence[Reading], vitals_id: str) -> Reading | None:
    return next((r for r in readings if r.vitals_id == vitals_id), None)


def regrade_words(cause: str, reading: Reading) -> str:
    """Why another set's finding changed, for the officer."""
    return f"{cause}; vitals set {reading.vitals_id} ({reading.measured_at:%Y-%m-%d %H:%M} UTC) graded again with it"


def recorded_words(reading: Reading) -> str:
    return f"vitals set {reading.vitals_id} ({reading.measured_at:%Y-%m-%d %H:%M} UTC) recorded by the site"


def correction_words(before: Reading, after: Reading) -> str:
    """What the site's correction of a vitals set changed, for the officer."""
    changed = [
        f"{label} {_shown(before, sign)} -> {_shown(after, sign)}"
        for sign, label in SIGN_LABELS.items()
        if before.signs.get(sign) != after.signs.get(sign)
    ]
    if before.measured_at != after.measured_at:
        changed.append(f"measured at {before.measured_at:%Y-%m-%d %H:%M} -> {after.measured_at:%Y-%m-%d %H:%M} UTC")
    return f"vitals set {after.vitals_id} corrected by the site: {', '.join(changed) or 'no value changed'}"


def _shown(reading: Reading, sign: VitalSign) -> str:
    value = reading.signs.get(sign)
    return "none" if value is None else f"{value} {SIGN_UNITS[sign]}"


# --- infusion-day monitoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotGap:
    slot: datetime
    missing: tuple[VitalSign, ...]

    def describe(self) -> str:
        signs = ", ".join(SIGN_LABELS[s] for s in self.missing)
        return f"{self.slot:%Y-%m-%d %H:%M} UTC: no {signs}"


def observation_end(infusion_at: datetime, *, rules: InfusionVitals) -> datetime:
    """The infusion's end (start + `infusion_minutes`) plus the observation after it."""
    return infusion_at + timedelta(minutes=rules.infusion_minutes + rules.observe_after_minutes)


def check_due(infusion_at: datetime, *, rules: InfusionVitals, now: datetime) -> bool:
    """The slots can be judged once the last one's tolerance has passed, plus the data-entry grace."""
    grace = timedelta(minutes=rules.tolerance_minutes, hours=rules.entry_grace_hours)
    return now >= observation_end(infusion_at, rules=rules) + grace


def slots(infusion_at: datetime, *, rules: InfusionVitals) -> list[datetime]:
    """Every `interval_minutes` from the start of the infusion to the end of the observation, both included."""
    end = observation_end(infusion_at, rules=rules)
    step = timedelta(minutes=rules.interval_minutes)
    count = int((end - infusion_at) / step)
    return [infusion_at + i * step for i in range(count + 1)]


def gaps(infusion_at: datetime, readings: Sequence[Reading], *, rules: InfusionVitals) -> list[SlotGap]:
    """Slots without a reading of every required sign within +/- `tolerance_minutes` (signs may come from
    several readings in that span: a monitor's BP and a thermometer's temperature are separate records)."""
    tolerance = timedelta(minutes=rules.tolerance_minutes)
    found = []
    for slot in slots(infusion_at, rules=rules):
        seen = {sign for r in readings if abs(r.measured_at - slot) <= tolerance for sign in r.signs}
        missing = tuple(sign for sign in rules.required if sign not in seen)
        if missing:
            found.append(SlotGap(slot, missing))
    return found


def monitoring_incomplete(gaps_found: Sequence[SlotGap], *, rules: InfusionVitals) -> bool:
    return len(gaps_found) > rules.allowed_missing_slots
