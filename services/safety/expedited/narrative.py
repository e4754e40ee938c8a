"""Pure: a case narrative draft (ICH E2B(R3) H.1; CIOMS I box 7+13) the officer edits before export.

It says only what the data says, in a fixed order (subject, product and doses, event, course, labs around
onset, outcome, causality, expectedness), and names what is missing instead of guessing it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from services.safety.expedited.report_case import LabLine, ReportCase, onset_date

NOT_GIVEN = "not reported"


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def cells_text(cells_per_kg: str | None) -> str:
    """2000000 -> '2 x 10^6 cells/kg' (exact: no float formatting of a dose)."""
    if cells_per_kg is None:
        return "dose not reported"
    try:
        value = Decimal(cells_per_kg)
    except InvalidOperation:
        return f"{cells_per_kg} cells/kg"
    if value <= 0:
        return f"{cells_per_kg} cells/kg"
    exponent = value.adjusted()
    mantissa = (value.scaleb(-exponent)).normalize()
    return f"{mantissa} x 10^{exponent} cells/kg" if exponent >= 3 else f"{value.normalize()} cells/kg"


def dose_text(case: ReportCase, cells_per_kg: str | None) -> str:
    """The dose the site recorded; else the protocol's dose for the subject's arm, said to be that."""
    if cells_per_kg is not None:
        return cells_text(cells_per_kg)
    if case.arm_cells_per_kg is not None:
        return f"{cells_text(case.arm_cells_per_kg)} (protocol dose of arm {case.arm}, not recorded per infusion)"
    return "dose not recorded"


def criteria_text(criteria: tuple[str, ...]) -> str:
    return ", ".join(c.replace("_", " ") for c in criteria) or "none ticked"


def lab_text(lab: LabLine) -> str:
    unit = f" {lab.unit}" if lab.unit else ""
    limits = ""
    if lab.lln or lab.uln:
        limits = f" (range {lab.lln or '?'}-{lab.uln or '?'})"
    grade = ", normal (CTCAE grade 0)" if lab.grade == 0 else ""
    if lab.grade and lab.term:
        grade = f", CTCAE grade {lab.grade} {lab.term}"
    base = " [baseline]" if lab.baseline else ""
    return f"{lab.collected_at.strftime('%Y-%m-%d')} {lab.test} {lab.value}{unit}{limits}{grade}{base}"


def draft_narrative(case: ReportCase) -> str:
    paragraphs = [_subject(case), _event(case), _course(case), _labs(case), _assessment(case)]
    return "\n\n".join(p for p in paragraphs if p)


def narrative_for_export(case: ReportCase) -> str:
    """The officer's edited text when there is one (for the latest version), else the generated draft."""
    return case.edited_narrative if case.edited_narrative else draft_narrative(case)


def _subject(case: ReportCase) -> str:
    arm = f", arm {case.arm} ({case.arm_label})" if case.arm else ""
    enrolled = f", enrolled on {case.enrolled_at.isoformat()}" if case.enrolled_at else ""
    text = (
        f"Subject {case.subject_id} (site {case.site_id}{arm}{enrolled}) in trial {case.trial_id} "
        f"({case.trial_title}) received {case.product}"
    )
    text += f" by the {case.route} route" if case.route else ""
    text += f" (indication: {case.indication})." if case.indication else "."
    if not case.doses:
        return text + " No infusion had been recorded before this report."
    doses = "; ".join(
        f"infusion {d.number} on {when(d.administered_at)} ({dose_text(case, d.cells_per_kg)})" for d in case.doses
    )
    return f"{text} Infusions: {doses}."


def _event(case: ReportCase) -> str:
    coded = f"CTCAE v5.0 '{case.term}'" + (f", MedDRA {case.meddra_code}" if case.meddra_code else ", no MedDRA code")
    onset = case.onset or NOT_GIVEN
    day = ""
    full = onset_date(case.onset)
    if full is not None:
        study_day = case.study_day(full)
        day = f" (study day {study_day})" if study_day is not None else ""
    grade = f"grade {case.grade}" if case.grade is not None else "grade not reported"
    return (
        f"On {onset}{day} the subject experienced '{case.reported_term}' ({coded}), {grade}. "
        f"The event was serious: {criteria_text(case.criteria)}."
        + (f" The site became aware on {when(case.awareness_at)}." if case.awareness_at else "")
    )


def _course(case: ReportCase) -> str:
    lines = [
        f"version {v.version} received {when(v.received_at)}: grade {v.grade if v.grade is not None else '?'}, "
        f"outcome {v.outcome or NOT_GIVEN}, seriousness {criteria_text(v.criteria)}, "
        f"investigator causality {v.relatedness or NOT_GIVEN}"
        for v in case.course
    ]
    end = f"; end date {case.end}" if case.end else ""
    return (
        f"Course as reported: {'; '.join(lines)}. Outcome at the time of this report: {case.outcome or NOT_GIVEN}{end}."
    )


def _labs(case: ReportCase) -> str:
    if not case.labs:
        return "Laboratory results around onset: none recorded."
    return "Laboratory results around onset: " + "; ".join(lab_text(lab) for lab in case.labs) + "."


def _assessment(case: ReportCase) -> str:
    sponsor = (
        f"the sponsor assessed it as {case.sponsor_causality.replace('_', ' ')}"
        + (f" ({case.causality_reason})" if case.causality_reason else "")
        if case.sponsor_causality
        else "the sponsor has not yet assessed causality"
    )
    basis = "confirmed by the sponsor" if case.expectedness_basis == "officer" else "proposed from the RSI"
    text = (
        f"Causality: the investigator assessed the event as {case.site_relatedness or NOT_GIVEN} to {case.product}; "
        f"{sponsor}. Expectedness: {case.expectedness} ({basis}; {case.rsi_document} v{case.rsi_version}, "
        f"{case.rsi_date.isoformat()}): {case.expectedness_reason}."
    )
    if case.susar and case.clock_start is not None:
        text += f" The case meets the SUSAR criteria; day 0 was {when(case.clock_start)}."
    return text
