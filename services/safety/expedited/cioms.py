"""Pure: the CIOMS I form (suspect adverse reaction report) of one report case, as PDF bytes (fpdf2).

Page 1 is the form's boxes in the form's numbering (1-25a); page 2 continues box 7+13 with the narrative,
the course, the labs and the sponsor's assessments. Every box the data cannot fill says so (BLANK) rather
than staying empty, so a reader can tell "not collected" from "forgotten".
"""

from __future__ import annotations

from datetime import datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from services.safety.expedited.narrative import criteria_text, dose_text, lab_text, narrative_for_export, when
from services.safety.expedited.report_case import ReportCase

BLANK = "[blank: not in the data]"
WIDTH = 190.0
LEFT = 10.0
LABEL_SIZE = 5.5
VALUE_SIZE = 7.5
CHECKS = (
    ("death", "PATIENT DIED"),
    ("hospitalization", "INVOLVED OR PROLONGED INPATIENT HOSPITALISATION"),
    ("disability", "INVOLVED PERSISTENT OR SIGNIFICANT DISABILITY OR INCAPACITY"),
    ("life_threatening", "LIFE THREATENING"),
    ("congenital_anomaly", "CONGENITAL ANOMALY"),
    ("medically_important", "OTHER MEDICALLY IMPORTANT CONDITION"),
)


def _latin(text: str) -> str:
    """The PDF core fonts are Latin-1: anything else becomes '?', never an exception."""
    return text.replace("\u2014", "-").replace("\u2013", "-").encode("latin-1", "replace").decode("latin-1")


class _Form:
    def __init__(self, created: datetime) -> None:
        pdf = FPDF(orientation="P", unit="mm", format="A4")
        pdf.set_creation_date(created)
        pdf.set_creator("Safety Sentinel")
        pdf.set_producer("Safety Sentinel (fpdf2)")
        pdf.set_auto_page_break(auto=False)
        pdf.set_margins(LEFT, 10, LEFT)
        pdf.set_draw_color(0, 0, 0)
        self.pdf = pdf

    def box(
        self, x: float, y: float, w: float, h: float, label: str, value: str | None, *, size: float = VALUE_SIZE
    ) -> None:
        """A numbered box: its label in small capitals at the top, its value (or BLANK) below."""
        pdf = self.pdf
        pdf.rect(x, y, w, h)
        pdf.set_xy(x + 0.8, y + 0.6)
        pdf.set_font("Helvetica", "B", LABEL_SIZE)
        pdf.multi_cell(w - 1.6, 2.4, _latin(label), align="L", new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_x(x + 0.8)
        blank = value is None or value == ""
        pdf.set_font("Helvetica", "I" if blank else "", size)
        pdf.set_text_color(110, 110, 110) if blank else pdf.set_text_color(0, 0, 0)
        text = _latin(BLANK if blank else str(value))
        pdf.multi_cell(w - 1.6, size * 0.45, text, align="L", new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_text_color(0, 0, 0)

    def check(self, x: float, y: float, ticked: bool, label: str) -> None:
        pdf = self.pdf
        pdf.rect(x, y, 3, 3)
        if ticked:
            pdf.line(x, y, x + 3, y + 3)
            pdf.line(x, y + 3, x + 3, y)
        pdf.set_xy(x + 4, y - 0.2)
        pdf.set_font("Helvetica", "B" if ticked else "", LABEL_SIZE + 0.5)
        pdf.multi_cell(46, 2.6, _latin(label), align="L", new_x=XPos.LEFT, new_y=YPos.NEXT)

    def section(self, y: float, title: str) -> float:
        pdf = self.pdf
        pdf.set_fill_color(225, 225, 225)
        pdf.rect(LEFT, y, WIDTH, 5, style="DF")
        pdf.set_xy(LEFT + 1, y + 0.8)
        pdf.set_font("Helvetica", "B", 7.5)
        pdf.cell(WIDTH - 2, 3.5, _latin(title))
        return y + 5


def _date_parts(value: str | None) -> str | None:
    """ISO (partial) date -> 'DD MON YYYY' as the form's Day/Month/Year boxes read."""
    if not value:
        return None
    months = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    parts = value.split("-")
    if len(parts) == 3:
        return f"{parts[2]} {months[int(parts[1]) - 1]} {parts[0]}"
    if len(parts) == 2:
        return f"-- {months[int(parts[1]) - 1]} {parts[0]} (day not reported)"
    return f"-- --- {parts[0]} (day and month not reported)"


def render_cioms(case: ReportCase, *, created: datetime) -> bytes:
    form = _Form(created)
    pdf = form.pdf
    pdf.set_title(_latin(f"CIOMS I {case.case_id} v{case.report_version}"))
    pdf.add_page()
    _page_one(form, case, created)
    pdf.add_page()
    _continuation(form, case)
    return bytes(pdf.output())


def _page_one(form: _Form, case: ReportCase, created: datetime) -> None:
    pdf = form.pdf
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_xy(LEFT, 8)
    pdf.cell(WIDTH, 4, "CIOMS FORM", align="R")
    pdf.set_xy(LEFT, 12)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(WIDTH, 6, "SUSPECT ADVERSE REACTION REPORT", align="C")
    pdf.set_xy(LEFT, 18)
    pdf.set_font("Helvetica", "I", 7)
    kind = "INITIAL" if not case.follow_up else f"FOLLOW-UP #{case.report_version - 1}"
    pdf.cell(
        WIDTH,
        4,
        _latin(
            f"DRAFT for review - {kind} - case {case.case_id} - AE version {case.ae_version} - "
            f"{'SUSAR' if case.susar else 'not a SUSAR on current assessments'}"
        ),
        align="C",
    )
    y = form.section(24, "I. REACTION INFORMATION")
    h = 17.0
    widths = (38, 18, 32, 16, 16, 16, 54)
    labels = (
        ("1. PATIENT INITIALS (first, last)", f"subject {case.subject_id} (initials not collected)"),
        ("1a. COUNTRY", case.country),
        ("2. DATE OF BIRTH (Day Month Year)", None),
        ("2a. AGE Years", None),
        ("3. SEX", None),
        ("3a. WEIGHT", None),
        ("4-6. REACTION ONSET (Day Month Year)", _date_parts(case.onset)),
    )
    x = LEFT
    for w, (label, value) in zip(widths, labels, strict=True):
        form.box(x, y, w, h, label, value)
        x += w
    y += h
    h = 70.0
    narrative = narrative_for_export(case)
    short = narrative if len(narrative) <= 900 else narrative[:880].rsplit(" ", 1)[0] + " ... (continued on page 2)"
    grade = case.grade if case.grade is not None else "not reported"
    description = (
        f"{case.reported_term} (CTCAE v5.0 {case.term}; MedDRA {case.meddra_code or 'not coded'}); grade {grade}; "
        f"outcome {case.outcome or 'not reported'}.\n\n{short}"
    )
    form.box(LEFT, y, 136, h, "7 + 13. DESCRIBE REACTION(S) (including relevant tests/lab data)", description, size=6.5)
    pdf.rect(LEFT + 136, y, WIDTH - 136, h)
    pdf.set_xy(LEFT + 137, y + 0.6)
    pdf.set_font("Helvetica", "B", LABEL_SIZE)
    pdf.multi_cell(WIDTH - 138, 2.4, "8-12. CHECK ALL APPROPRIATE TO ADVERSE REACTION", align="L")
    cy = y + 7
    for key, label in CHECKS:
        form.check(LEFT + 138, cy, key in case.criteria, label)
        cy += 9
    y += h
    y = form.section(y, "II. SUSPECT DRUG(S) INFORMATION")
    first_dose, last_dose = case.first_dose, case.last_dose
    doses = _daily_doses(case)
    form.box(LEFT, y, 136, 12, "14. SUSPECT DRUG(S) (include generic name)", case.product)
    form.box(LEFT + 136, y, 54, 12, "20. DID REACTION ABATE AFTER STOPPING DRUG? (YES / NO / NA)", None)
    y += 12
    form.box(LEFT, y, 68, 12, "15. DAILY DOSE(S)", doses)
    form.box(LEFT + 68, y, 68, 12, "16. ROUTE(S) OF ADMINISTRATION", case.route)
    form.box(LEFT + 136, y, 54, 24, "21. DID REACTION REAPPEAR AFTER REINTRODUCTION? (YES / NO / NA)", None)
    y += 12
    form.box(LEFT, y, 136, 12, "17. INDICATION(S) FOR USE", case.indication)
    y += 12
    dates, duration = None, None
    if first_dose is not None and last_dose is not None:
        start, stop = first_dose.administered_at.date(), last_dose.administered_at.date()
        dates = f"{start.isoformat()} to {stop.isoformat()}"
        days = (stop - start).days + 1
        duration = f"{days} day(s), {len(case.doses)} infusion(s)"
    form.box(LEFT, y, 68, 12, "18. THERAPY DATES (from/to)", dates)
    form.box(LEFT + 68, y, 68, 12, "19. THERAPY DURATION", duration)
    form.box(LEFT + 136, y, 54, 12, "ARM (protocol)", f"{case.arm}: {case.arm_label}" if case.arm else None)
    y += 12
    y = form.section(y, "III. CONCOMITANT DRUG(S) AND HISTORY")
    form.box(
        LEFT,
        y,
        WIDTH,
        12,
        "22. CONCOMITANT DRUG(S) AND DATES OF ADMINISTRATION (exclude those used to treat reaction)",
        None,
    )
    y += 12
    baseline = "; ".join(lab_text(lab) for lab in case.labs if lab.baseline) or None
    form.box(
        LEFT,
        y,
        WIDTH,
        14,
        "23. OTHER RELEVANT HISTORY (e.g. diagnostics, allergies, pregnancy with last month of period, etc.)",
        f"Baseline laboratory values: {baseline}" if baseline else None,
    )
    y += 14
    y = form.section(y, "IV. MANUFACTURER INFORMATION")
    form.box(
        LEFT,
        y,
        95,
        16,
        "24a. NAME AND ADDRESS OF MANUFACTURER",
        f"{case.sender_organisation} (sponsor of {case.trial_id})",
    )
    form.box(
        LEFT + 95,
        y,
        95,
        16,
        "REMARKS",
        f"Causality: investigator {case.site_relatedness or 'not reported'}; sponsor "
        f"{(case.sponsor_causality or 'not assessed').replace('_', ' ')}. Expectedness: {case.expectedness} "
        f"({case.rsi_document} v{case.rsi_version}).",
    )
    y += 16
    form.box(LEFT, y, 47, 12, "24b. MFR CONTROL NO.", case.case_id)
    form.box(LEFT + 47, y, 48, 12, "24c. DATE RECEIVED BY MANUFACTURER", when(case.first_received_at))
    form.box(LEFT + 95, y, 95, 12, "24d. REPORT SOURCE", "[X] STUDY   [ ] LITERATURE   [ ] HEALTH PROFESSIONAL")
    y += 12
    form.box(LEFT, y, 47, 12, "DATE OF THIS REPORT", created.strftime("%Y-%m-%d"))
    report_type = "[ ] INITIAL   [X] FOLLOWUP" if case.follow_up else "[X] INITIAL   [ ] FOLLOWUP"
    form.box(LEFT + 47, y, 48, 12, "25a. REPORT TYPE", f"{report_type} (report version {case.report_version})")
    form.box(LEFT + 95, y, 95, 12, "DAY 0 (sponsor awareness)", when(case.clock_start) if case.clock_start else None)


def _daily_doses(case: ReportCase) -> str | None:
    """One line per distinct dose: '#1, #2: 2 x 10^6 cells/kg' (short enough for box 15)."""
    by_dose: dict[str, list[str]] = {}
    for d in case.doses:
        by_dose.setdefault(dose_text(case, d.cells_per_kg), []).append(f"#{d.number}")
    return "; ".join(f"{', '.join(numbers)}: {text}" for text, numbers in by_dose.items()) or None


def _basis(case: ReportCase) -> str:
    return "confirmed by an officer" if case.expectedness_basis == "officer" else "proposed from the RSI"


def _continuation(form: _Form, case: ReportCase) -> None:
    pdf = form.pdf
    pdf.set_xy(LEFT, 10)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(WIDTH, 6, _latin(f"CIOMS I continuation - case {case.case_id}, report version {case.report_version}"))
    pdf.set_auto_page_break(auto=True, margin=12)
    blocks = [
        ("7 + 13 (continued). CASE NARRATIVE", narrative_for_export(case)),
        (
            "COURSE (each version as received)",
            "\n".join(
                f"v{v.version} received {when(v.received_at)}: grade {'?' if v.grade is None else v.grade}; "
                f"outcome {v.outcome or 'not reported'}; seriousness {criteria_text(v.criteria)}; "
                f"investigator causality {v.relatedness or 'not reported'}"
                for v in case.course
            ),
        ),
        ("LABORATORY RESULTS AROUND ONSET", "\n".join(lab_text(lab) for lab in case.labs) or BLANK),
        (
            "SPONSOR ASSESSMENTS",
            f"Causality (sponsor): {(case.sponsor_causality or 'not assessed').replace('_', ' ')}"
            + (f" by {case.causality_by}: {case.causality_reason}" if case.sponsor_causality else "")
            + f"\nExpectedness: {case.expectedness} ({_basis(case)}): {case.expectedness_reason}"
            f"\nRSI: {case.rsi_document}, version {case.rsi_version}, {case.rsi_date.isoformat()}",
        ),
        (
            "NOT IN THE DATA (blank boxes)",
            "Patient initials, date of birth, age, sex, weight (1-3a); dechallenge and rechallenge (20, 21); "
            "concomitant drugs (22); medical history other than baseline laboratory values (23).",
        ),
    ]
    pdf.set_y(18)
    for title, text in blocks:
        pdf.set_x(LEFT)
        pdf.set_font("Helvetica", "B", 8)
        pdf.cell(WIDTH, 5, _latin(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 8)
        pdf.multi_cell(WIDTH, 3.8, _latin(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(2)
