"""Pure: does an AE meet the protocol's DLT criteria, and how does its DLT record move when it changes?

Automatic classification only ever gives a *suspected* DLT; a safety officer confirms or rejects it.
Decisions made where the protocol leaves room (each is stated in the reason a person reads):
- The AE's grade is the worst grade any of its versions reported (CTCAE grades an AE by its worst
  severity; a lower follow-up grade is the AE improving). Term, relatedness and onset come from the
  latest version, so a follow-up that says "not related" withdraws the suspicion.
- Relatedness not yet assessed counts as related (the usual convention for expedited safety review) until
  the site says otherwise.
- Terms are CTCAE terms: the AE's verbatim term is mapped first (ae_terms: MedDRA code, synonyms, spelling).
- Cytopenias (the protocol's haematological terms) count under a general criterion only when worse than the
  subject's baseline lab grade for that term (with `only_if_worse_than_baseline`), and under the
  haematological rules (HaematologicalDlt: worsening by N grades, failure to recover, prolonged grade 4);
  with no baseline lab for the term, baseline is taken as grade 0. A pancytopenia is compared with the
  lowest baseline of the lines it stands for. Febrile neutropenia has its own grade and relatedness rule.
- Relatedness is one test for every criterion (`related_enough`), each with its own minimum.
- Lab results alone can make a haematological suspicion (`classify_labs`): one record per subject and term.
- A confirmed DLT stays confirmed whatever follow-ups say about the event confirmed (the officer's decision
  stands), unless the site recodes the AE to another event that meets only another criterion: the confirmation
  does not carry over to it, and the DLT is suspected again for review; a rejected one reopens only on new
  evidence: graded worse than the grade the officer rejected, or meeting another criterion than the one rejected
  (labs: a lasting grade 4 or a failure to recover is preferred over the bare worsening).
  When follow-ups move the data against a decision that stands, its officers are told (dlt_decision_basis).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from services.safety.dlt_window import DltWindow, place_onset
from shared.events import Relatedness
from shared.protocol import RELATEDNESS_ORDER, DltCriterion, DltRules, HaematologicalDlt

HAEMATOLOGICAL = "haematological"
FEBRILE_NEUTROPENIA = "febrile_neutropenia"
FAILURE_TO_RECOVER = "haematological_failure_to_recover"
GRADE4_PROLONGED = "haematological_grade4_prolonged"


class DltState(StrEnum):
    SUSPECTED = "suspected"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class DltSignal(StrEnum):
    SUSPECTED = "dlt.suspected"
    WITHDRAWN = "dlt.withdrawn"


def _suspected() -> Transition:
    return Transition(DltState.SUSPECTED, DltSignal.SUSPECTED)


@dataclass(frozen=True)
class AeFacts:
    """One AE folded over its versions, as the DLT rule sees it."""

    ae_id: str
    version: int
    term: str
    grade: int | None
    relatedness: Relatedness | None
    onset: str | None
    status: str | None = None
    """A site status (entered_in_error, deleted) that takes the AE out of consideration; None: active."""
    terms: tuple[str, ...] = ()
    """The CTCAE terms the AE maps to (ae_terms); empty: only its own `term`."""
    mapping_note: str | None = None
    disputed_terms: tuple[str, ...] = ()
    """The CTCAE terms the verbatim words mean when the MedDRA code (which gave `terms`) says otherwise."""

    @property
    def ctcae_terms(self) -> tuple[str, ...]:
        return self.terms or (self.term,)


@dataclass(frozen=True)
class Classification:
    meets: bool
    criterion: str | None
    reason: str
    met: tuple[str, ...] = ()
    """Every criterion the AE meets (`criterion` is the first): a confirmation stands while its own is among them."""


@dataclass(frozen=True)
class Transition:
    state: DltState | None
    signal: DltSignal | None


def fold_versions(versions: list[AeFacts]) -> AeFacts:
    """The latest version's facts with the worst grade of the versions reporting its event (CTCAE grades an event by
    its worst grade; a grade reported under another term before the site recoded the AE was another event's)."""
    if not versions:
        raise ValueError("an AE needs at least one version")
    latest = max(versions, key=lambda v: v.version)
    event = latest.term.casefold()
    grades = [v.grade for v in versions if v.grade is not None and v.term.casefold() == event]
    return AeFacts(
        ae_id=latest.ae_id,
        version=latest.version,
        term=latest.term,
        grade=max(grades) if grades else None,
        relatedness=latest.relatedness,
        onset=latest.onset,
        status=latest.status,
        terms=latest.terms,
        mapping_note=latest.mapping_note,
        disputed_terms=latest.disputed_terms,
    )


def related_enough(relatedness: Relatedness | None, minimum: str | None) -> bool:
    """The one relatedness test every criterion uses: unassessed counts as related; None minimum: any."""
    if relatedness is None or minimum is None:
        return True
    return RELATEDNESS_ORDER.index(relatedness.value) >= RELATEDNESS_ORDER.index(minimum)


def _fold(terms: Iterable[str]) -> set[str]:
    return {t.casefold() for t in terms}


def febrile_terms(rules: DltRules) -> set[str]:
    haem = rules.haematological
    return _fold(haem.febrile_neutropenia.terms) if haem and haem.febrile_neutropenia else set()


def cytopenia_terms(rules: DltRules) -> set[str]:
    """The protocol's haematological terms judged by the cytopenia rules (febrile neutropenia has its own)."""
    haem = rules.haematological
    return _fold(haem.terms) - febrile_terms(rules) if haem else set()


def haematological_terms(rules: DltRules) -> set[str]:
    return cytopenia_terms(rules) | febrile_terms(rules)


def _criterion_applies(criterion: DltCriterion, ae: AeFacts, *, grade: int, haematological: bool) -> str | None:
    """Why the criterion does not apply, or None when it does."""
    if grade < criterion.min_grade:
        return f"grade {grade} < {criterion.min_grade}"
    if criterion.terms and not _fold(ae.ctcae_terms) & _fold(criterion.terms):
        return "term not listed"
    if criterion.exclude_haematological and haematological:
        return "haematological term"
    if not related_enough(ae.relatedness, criterion.min_relatedness):
        return f"relatedness {ae.relatedness} below {criterion.min_relatedness}"
    return None


def _cytopenia_rule(ae: AeFacts, *, rules: HaematologicalDlt, grade: int, baseline: int | None) -> tuple[bool, str]:
    """The AE-based cytopenia rule: grade, worsening against the baseline lab grade, relatedness."""
    if grade < rules.min_grade:
        return False, f"grade {grade} < {rules.min_grade}"
    if rules.only_if_worse_than_baseline and rules.min_worsening_grades is not None:
        base = baseline or 0
        if grade - base < rules.min_worsening_grades:
            return False, (
                f"not {rules.min_worsening_grades} grade(s) worse than the subject's baseline grade {baseline}"
                if baseline is not None
                else f"grade {grade} is not {rules.min_worsening_grades} grade(s) above normal"
            )
    elif rules.only_if_worse_than_baseline:
        return False, "the protocol's cytopenia rules for AEs are off (min_worsening_grades: null)"
    if not related_enough(ae.relatedness, rules.min_relatedness):
        return False, f"relatedness {ae.relatedness} below {rules.min_relatedness}"
    return True, (
        f"{grade - (baseline or 0)} grade(s) worse than baseline grade {baseline}"
        if baseline is not None
        else "no baseline lab grade for this term (taken as normal)"
    )


def classify(
    ae: AeFacts, *, rules: DltRules, window: DltWindow | None, baseline_grades: Mapping[str, int]
) -> Classification:
    """Whether the AE is a suspected DLT, with the reason in words a safety officer can check.

    `baseline_grades` maps CTCAE terms (any case) to the subject's baseline lab grade. When the MedDRA code and
    the verbatim words mean different CTCAE terms (`disputed_terms`), the AE is judged by each: a criterion
    either meets counts, so a coding slip can never hide a DLT (the reason says so).
    """
    verdict = _classify(ae, rules=rules, window=window, baseline_grades=baseline_grades)
    if verdict.meets or not ae.disputed_terms:
        return verdict
    by_words = _classify(
        replace(ae, term=ae.disputed_terms[0], terms=ae.disputed_terms, disputed_terms=()),
        rules=rules,
        window=window,
        baseline_grades=baseline_grades,
    )
    if not by_words.meets:
        return verdict
    note = (
        f"; judged by its words, CTCAE {', '.join(repr(t) for t in ae.disputed_terms)}, because the MedDRA code means"
        f" {', '.join(repr(t) for t in ae.ctcae_terms)} (not a DLT by the code alone): the site must resolve the coding"
    )
    return Classification(True, by_words.criterion, by_words.reason + note, by_words.met)


def _classify(
    ae: AeFacts, *, rules: DltRules, window: DltWindow | None, baseline_grades: Mapping[str, int]
) -> Classification:
    label = f"grade {ae.grade} '{ae.term}'" if ae.grade is not None else f"ungraded '{ae.term}'"
    if ae.status is not None:
        return Classification(False, None, f"{label}: the site marked this AE {ae.status.replace('_', ' ')}")
    if window is None:
        anchor = "enrolment" if rules.anchor == "enrolment" else "infusion"
        return Classification(False, None, f"{label}: no DLT window yet (no {anchor} recorded)")
    if ae.grade is None:
        return Classification(False, None, f"{label}: no grade reported yet")
    placement = place_onset(window, ae.onset)
    if not placement.inside:
        return Classification(False, None, f"{label}: {placement.explanation}")
    terms = _fold(ae.ctcae_terms)
    febrile = bool(terms & febrile_terms(rules))
    cytopenia = bool(terms & cytopenia_terms(rules))
    haematological = febrile or cytopenia
    baselines = {term.casefold(): grade for term, grade in baseline_grades.items()}
    lines = terms & cytopenia_terms(rules) or terms
    known = [baselines[t] for t in lines if t in baselines]
    # A line without a baseline lab is taken as normal (grade 0), as for a single cytopenia: a pancytopenia is
    # compared with the lowest baseline of the lines it stands for, an unknown one included.
    baseline = (min(known) if len(known) == len(lines) else 0) if known else None
    notes = [placement.explanation]
    if ae.relatedness is None:
        notes.append("relatedness not yet assessed: treated as related until the site says otherwise")
    if ae.mapping_note:
        notes.append(ae.mapping_note)
    relation = f" ({ae.relatedness.value})" if ae.relatedness else ""
    haem = rules.haematological
    masked = cytopenia and haem is not None and haem.only_if_worse_than_baseline and ae.grade <= (baseline or 0)
    met = _also_met(
        ae,
        rules=rules,
        haematological=haematological,
        febrile=febrile,
        cytopenia=cytopenia,
        masked=masked,
        baseline=baseline,
    )
    for criterion in rules.criteria:
        if masked:
            break
        if _criterion_applies(criterion, ae, grade=ae.grade, haematological=haematological) is None:
            reason = f"{label}{relation} meets {criterion.name}: {criterion.description}; " + "; ".join(notes)
            return Classification(True, criterion.name, reason, met)
    misses = [f"not worse than the subject's baseline grade {baseline}"] if masked else []
    misses += [
        f"{c.name}: {why}"
        for c in rules.criteria
        if not masked and (why := _criterion_applies(c, ae, grade=ae.grade, haematological=haematological)) is not None
    ]
    if febrile and haem is not None and haem.febrile_neutropenia is not None:
        fn = haem.febrile_neutropenia
        if ae.grade >= fn.min_grade and related_enough(ae.relatedness, fn.min_relatedness):
            needed = f", at least {fn.min_relatedness}" if fn.min_relatedness else ", whatever its causality"
            reason = f"{label}{relation} meets {FEBRILE_NEUTROPENIA}: grade >= {fn.min_grade}{needed}; "
            return Classification(True, FEBRILE_NEUTROPENIA, reason + "; ".join(notes), met)
        misses.append(
            f"{FEBRILE_NEUTROPENIA}: "
            + (
                f"grade {ae.grade} < {fn.min_grade}"
                if ae.grade < fn.min_grade
                else f"relatedness below {fn.min_relatedness}"
            )
        )
    if cytopenia and haem is not None:
        meets, why = _cytopenia_rule(ae, rules=haem, grade=ae.grade, baseline=baseline)
        if meets:
            reason = f"{label}{relation} meets {HAEMATOLOGICAL}: grade >= {haem.min_grade}, {why}; "
            return Classification(True, HAEMATOLOGICAL, reason + "; ".join(notes), met)
        misses.append(f"{HAEMATOLOGICAL}: {why}")
    return Classification(False, None, f"{label}: meets no DLT criterion ({'; '.join(misses)})")


def _also_met(
    ae: AeFacts,
    *,
    rules: DltRules,
    haematological: bool,
    febrile: bool,
    cytopenia: bool,
    masked: bool,
    baseline: int | None,
) -> tuple[str, ...]:
    """Every criterion a graded AE inside the window meets, in the protocol's order (the same tests as `_classify`)."""
    grade = ae.grade or 0
    met = [
        c.name
        for c in rules.criteria
        if not masked and _criterion_applies(c, ae, grade=grade, haematological=haematological) is None
    ]
    haem = rules.haematological
    if febrile and haem is not None and haem.febrile_neutropenia is not None:
        fn = haem.febrile_neutropenia
        if grade >= fn.min_grade and related_enough(ae.relatedness, fn.min_relatedness):
            met.append(FEBRILE_NEUTROPENIA)
    if cytopenia and haem is not None and _cytopenia_rule(ae, rules=haem, grade=grade, baseline=baseline)[0]:
        met.append(HAEMATOLOGICAL)
    return tuple(met)


@dataclass(frozen=True)
class LabPoint:
    """One active, graded result of a haematological term, as the lab-based DLT rules see it."""

    result_id: str
    collected_at: datetime
    grade: int
    baseline: bool


@dataclass(frozen=True)
class LabFinding:
    """A lab-only haematological DLT suspicion for one term of one subject."""

    term: str
    rule: str
    grade: int
    result_id: str
    reason: str


def lab_dlt_id_part(term: str) -> str:
    """The `ae_id` of a lab-based DLT record: one per subject and term (labs have no AE id)."""
    return f"lab:{term}"


def classify_labs(
    term: str, points: Sequence[LabPoint], *, rules: DltRules, window: DltWindow | None, baseline: int | None
) -> LabFinding | None:
    """The telling haematological finding of the term's results in the window (labs carry no causality): a lasting
    grade 4, else a failure to recover, else the worsening itself."""
    haem = rules.haematological
    if haem is None or not haem.labs_count or window is None or term.casefold() not in cytopenia_terms(rules):
        return None
    ordered = sorted(
        (p for p in points if not p.baseline and p.collected_at >= window.start), key=lambda p: p.collected_at
    )
    inside = [p for p in ordered if window.contains_instant(p.collected_at)]
    base = baseline or 0
    said = f"baseline grade {baseline}" if baseline is not None else "no baseline result (taken as normal)"
    worsening = _lab_worsening(term, inside, rules=haem, window=window, base=base, said=said)
    recovery = _lab_failure_to_recover(term, inside, ordered, rules=haem, window=window, base=base, said=said)
    prolonged = _lab_grade4_prolonged(term, ordered, rules=haem, window=window, base=base)
    # The finding that says the most: a worsening that then lasted or did not recover is new evidence after an
    # officer rejected the worsening itself (a rejected record reopens on a criterion not yet judged).
    return prolonged or recovery or worsening


def _lab_worsening(
    term: str, inside: Sequence[LabPoint], *, rules: HaematologicalDlt, window: DltWindow, base: int, said: str
) -> LabFinding | None:
    for point in inside:
        worse = point.grade - base
        if point.grade < rules.min_grade:
            continue
        if not rules.only_if_worse_than_baseline:
            return LabFinding(
                term,
                HAEMATOLOGICAL,
                point.grade,
                point.result_id,
                _lab_reason(term, point, window, f"grade {point.grade} >= {rules.min_grade} whatever the baseline"),
            )
        if rules.min_worsening_grades is not None and worse >= rules.min_worsening_grades:
            return LabFinding(
                term,
                HAEMATOLOGICAL,
                point.grade,
                point.result_id,
                _lab_reason(term, point, window, f"grade {point.grade} is {worse} grade(s) worse than {said}"),
            )
    return None


def _lab_failure_to_recover(
    term: str,
    inside: Sequence[LabPoint],
    ordered: Sequence[LabPoint],
    *,
    rules: HaematologicalDlt,
    window: DltWindow,
    base: int,
    said: str,
) -> LabFinding | None:
    if rules.recover_by_day is None:
        return None
    first_worse = next((p for p in inside if p.grade > base and p.grade >= rules.min_grade), None)
    if first_worse is None:
        return None
    due = window.calendar.day_starts(window.calendar.date_of(rules.recover_by_day))
    later = [p for p in ordered if p.collected_at >= first_worse.collected_at]
    recovered = any(
        p.grade <= base
        for p in later
        if p.collected_at < window.calendar.day_ends(window.calendar.date_of(rules.recover_by_day))
    )
    judged = next((p for p in later if p.collected_at >= due), None)
    if recovered or judged is None or judged.grade <= base:
        return None
    return LabFinding(
        term,
        FAILURE_TO_RECOVER,
        judged.grade,
        judged.result_id,
        _lab_reason(
            term,
            judged,
            window,
            f"worse than {said} since {first_worse.collected_at.date().isoformat()} and not back to it by"
            f" study day {rules.recover_by_day} (failure to recover)",
        ),
    )


def _lab_grade4_prolonged(
    term: str, ordered: Sequence[LabPoint], *, rules: HaematologicalDlt, window: DltWindow, base: int
) -> LabFinding | None:
    if rules.grade4_max_days is None or (base >= 4 and not rules.grade4_from_baseline_counts):
        return None
    run_start: datetime | None = window.start if base >= 4 else None
    for point in ordered:
        if point.grade >= 4:
            if run_start is None:
                if not window.contains_instant(point.collected_at):
                    continue
                run_start = point.collected_at
            lasted = point.collected_at - run_start
            if lasted > timedelta(days=rules.grade4_max_days):
                return LabFinding(
                    term,
                    GRADE4_PROLONGED,
                    point.grade,
                    point.result_id,
                    _lab_reason(
                        term,
                        point,
                        window,
                        f"grade 4 since {run_start.date().isoformat()}: {lasted.days} day(s), more than"
                        f" {rules.grade4_max_days}"
                        + (" (grade 4 at baseline counts from the first infusion)" if base >= 4 else ""),
                    ),
                )
        else:
            run_start = None
    return None


def _lab_reason(term: str, point: LabPoint, window: DltWindow, why: str) -> str:
    day = window.study_day(window.site_date(point.collected_at))
    return (
        f"lab result {point.result_id} '{term}' collected on study day {day}: {why}; a lab-only suspicion (no AE"
        " reported yet, so no causality: the officer judges it)"
    )


def transition(
    current: DltState | None,
    classification: Classification,
    *,
    grade: int | None,
    decided_grade: int | None,
    decided_criterion: str | None = None,
    rejected: bool = False,
    confirmed: bool = False,
    other_event: bool = False,
) -> Transition:
    """The next state of an AE's DLT record, and the signal that change sends (if any).

    A rejected record (`rejected`: an officer's rejection on file, the record not confirmed since) reopens on new
    evidence: a worse grade than the one rejected, or a criterion other than the one the officer judged
    (`decided_criterion`: a worsening rejected as transient that then lasts > 14 days). Its state is a function
    of the rejection and the data as they stand: when the new evidence goes away (corrected, taken back), the
    rejection stands again, so the same data give the same state whatever was seen in between.

    A confirmation (`confirmed`: the officer's confirmation on file, the record confirmed or reopened from it)
    stands whatever the data say about the event confirmed (they may no longer meet a criterion: the officers are
    told, `dlt_decision_basis`), except when the AE is now another event (`other_event`: recoded to another CTCAE
    term than the one confirmed) that meets only another criterion than the one confirmed: a confirmation is of the
    event reviewed and does not carry over, so the DLT is suspected again, for review under its new criterion (as a
    rejection reopens). When the AE is again the event confirmed, or meets no criterion, the confirmation stands
    again (the suspicion withdrawn)."""
    meets = classification.meets
    if current is DltState.CONFIRMED or (confirmed and current is DltState.SUSPECTED):
        if _another_event(classification, decided_criterion=decided_criterion, other_event=other_event):
            return Transition(current, None) if current is DltState.SUSPECTED else _suspected()
        if current is DltState.SUSPECTED:  # the other event is gone: the confirmation stands again
            return Transition(DltState.CONFIRMED, DltSignal.WITHDRAWN)
        return Transition(current, None)
    if rejected or current is DltState.REJECTED:
        other_rule = decided_criterion is not None and classification.criterion not in (None, decided_criterion)
        new_evidence = meets and ((grade or 0) > (decided_grade or 0) or other_rule)
        if new_evidence:
            return Transition(current, None) if current is DltState.SUSPECTED else _suspected()
        if current is DltState.SUSPECTED:  # the evidence that reopened it is gone: the rejection stands again
            return Transition(DltState.REJECTED, DltSignal.WITHDRAWN)
        return Transition(DltState.REJECTED, None)  # from withdrawn: neither counts, nothing to tell
    if current is None:
        return Transition(DltState.SUSPECTED, DltSignal.SUSPECTED) if meets else Transition(None, None)
    if current is DltState.SUSPECTED:
        return Transition(current, None) if meets else Transition(DltState.WITHDRAWN, DltSignal.WITHDRAWN)
    if current is DltState.WITHDRAWN:
        return Transition(DltState.SUSPECTED, DltSignal.SUSPECTED) if meets else Transition(current, None)
    return Transition(current, None)


def _another_event(classification: Classification, *, decided_criterion: str | None, other_event: bool) -> bool:
    """A confirmed AE recoded to another event that meets a criterion, none of them the one confirmed (a confirmation
    from before the criterion was kept, `decided_criterion` None, is never reopened: nothing to compare)."""
    if not (other_event and classification.meets) or decided_criterion is None:
        return False
    met = classification.met or ((classification.criterion,) if classification.criterion else ())
    return decided_criterion not in met
