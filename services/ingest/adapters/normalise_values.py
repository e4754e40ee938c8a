"""Pure value normalisation for what EDCs really send (EDC-FORMATS section 2.6).

Every function takes the sender's text and returns our canonical value, or None when the sender said nothing.
A value we cannot read raises `UnreadableValue`; callers keep the raw text and flag it, they never guess.
Sources may override the code lists (`codelists` in the sources file): overrides win over these defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from shared.events import Relatedness

PARTIAL_ISO = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
RAVE_DATE = re.compile(r"^(UN|UNK|\d{1,2})[ -]([A-Za-z]{3}|UNK)[ -](\d{4})$")
MONTHS = {
    m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)
}
CENSORED = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$")
NUMBER = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*$")
RANGE_TEXT = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:-|\u2013|to)\s*([+-]?(?:\d+\.?\d*|\.\d+))")


class UnreadableValue(ValueError):
    """The sender's text does not fit the field; the message says what was expected."""


def _key(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.strip()).upper().replace(" / ", "/")


YES = {"Y", "YES", "1", "TRUE", "T", "CHECKED"}
NO = {"N", "NO", "0", "FALSE", "F", "UNCHECKED"}


def yes_no(text: str | None, overrides: Mapping[str, bool] | None = None) -> bool | None:
    """Y/N, 1/0, Yes/No, true/false; empty is None (unknown), never False."""
    if text is None or not text.strip():
        return None
    if overrides:
        for spelled, value in overrides.items():
            if _key(spelled) == _key(text):
                return value
    key = _key(text)
    if key in YES:
        return True
    if key in NO:
        return False
    raise UnreadableValue(f"expected a yes/no value, got {text!r}")


SERIOUS_CODES = {"SERIOUS": True, "NON-SERIOUS": False, "NONSERIOUS": False, "NOT SERIOUS": False}


def serious(text: str | None, overrides: Mapping[str, bool] | None = None) -> bool | None:
    """`Serious`/`Non-serious` (FHIR R4), lower-case THO 5.x codes, or any yes/no spelling."""
    if text is None or not text.strip():
        return None
    key = _key(text)
    if key in SERIOUS_CODES:
        return SERIOUS_CODES[key]
    return yes_no(text, overrides)


OUTCOMES = {
    "RECOVERED/RESOLVED": "RECOVERED/RESOLVED",
    "RESOLVED": "RECOVERED/RESOLVED",
    "RECOVERED": "RECOVERED/RESOLVED",
    "C49498": "RECOVERED/RESOLVED",
    "RECOVERING/RESOLVING": "RECOVERING/RESOLVING",
    "RECOVERING": "RECOVERING/RESOLVING",
    "C49496": "RECOVERING/RESOLVING",
    "NOT RECOVERED/NOT RESOLVED": "NOT RECOVERED/NOT RESOLVED",
    "NOT RECOVERED": "NOT RECOVERED/NOT RESOLVED",
    "ONGOING": "NOT RECOVERED/NOT RESOLVED",
    "NOTRESOLVED": "NOT RECOVERED/NOT RESOLVED",
    "C49494": "NOT RECOVERED/NOT RESOLVED",
    "RECOVERED/RESOLVED WITH SEQUELAE": "RECOVERED/RESOLVED WITH SEQUELAE",
    "RESOLVEDWITHSEQUELAE": "RECOVERED/RESOLVED WITH SEQUELAE",
    "RESOLVED WITH SEQUELAE": "RECOVERED/RESOLVED WITH SEQUELAE",
    "C49495": "RECOVERED/RESOLVED WITH SEQUELAE",
    "FATAL": "FATAL",
    "DEATH": "FATAL",
    "DIED": "FATAL",
    "C48275": "FATAL",
    "UNKNOWN": "UNKNOWN",
    "C17998": "UNKNOWN",
}


def outcome(text: str | None, overrides: Mapping[str, str] | None = None) -> str | None:
    """To CDISC OUT: Rave `Recovered / Resolved`, OpenClinica `RECOVERED_RESOLVED`, FHIR `resolved`, NCI codes."""
    if text is None or not text.strip():
        return None
    if overrides:
        for spelled, value in overrides.items():
            if _key(spelled) == _key(text):
                return value
    key = _key(text)
    if key in OUTCOMES:
        return OUTCOMES[key]
    slashed = key.replace(" RESOLVED", "/RESOLVED").replace(" RESOLVING", "/RESOLVING").replace(" NOT ", "/NOT ")
    if slashed in OUTCOMES:
        return OUTCOMES[slashed]
    raise UnreadableValue(f"unknown outcome {text!r}")


RELATEDNESS = {
    "NOT RELATED": Relatedness.NOT_RELATED,
    "NONE": Relatedness.NOT_RELATED,
    "UNRELATED": Relatedness.NOT_RELATED,
    "NOT_RELATED": Relatedness.NOT_RELATED,
    "C53256": Relatedness.NOT_RELATED,
    "UNLIKELY": Relatedness.UNLIKELY,
    "UNLIKELY RELATED": Relatedness.UNLIKELY,
    "REMOTE": Relatedness.UNLIKELY,
    "C53257": Relatedness.UNLIKELY,
    "POSSIBLE": Relatedness.POSSIBLE,
    "POSSIBLY": Relatedness.POSSIBLE,
    "POSSIBLY RELATED": Relatedness.POSSIBLE,
    "C53258": Relatedness.POSSIBLE,
    "PROBABLE": Relatedness.PROBABLE,
    "PROBABLY": Relatedness.PROBABLE,
    "PROBABLY RELATED": Relatedness.PROBABLE,
    "LIKELY": Relatedness.PROBABLE,
    "C53259": Relatedness.PROBABLE,
    "RELATED": Relatedness.PROBABLE,
    "DEFINITE": Relatedness.DEFINITE,
    "DEFINITELY": Relatedness.DEFINITE,
    "DEFINITELY RELATED": Relatedness.DEFINITE,
    "CERTAIN": Relatedness.DEFINITE,
    "C53260": Relatedness.DEFINITE,
    # FHIR R4 adverse-event-causality-assess (WHO-UMC): codes, displays and the WHO-UMC spellings
    "PROBABLY-LIKELY": Relatedness.PROBABLE,
    "PROBABLY/LIKELY": Relatedness.PROBABLE,
    "PROBABLY LIKELY": Relatedness.PROBABLE,
    "PROBABLE-LIKELY": Relatedness.PROBABLE,
    "PROBABLE/LIKELY": Relatedness.PROBABLE,
}
"""Binary `RELATED` (Rave) maps to probable: related without a stated degree; sources may override it."""
NO_DEGREE = {
    "CONDITIONAL-CLASSIFIED",
    "CONDITIONAL/CLASSIFIED",
    "CONDITIONAL/UNCLASSIFIED",
    "CONDITIONAL",
    "UNASSESSABLE-UNCLASSIFIABLE",
    "UNASSESSABLE/UNCLASSIFIABLE",
    "UNASSESSABLE",
    "UNCLASSIFIABLE",
}
"""WHO-UMC categories that state no degree of relatedness: read as unknown and flagged, never as unrelated."""


def relatedness(text: str | None, overrides: Mapping[str, str] | None = None) -> Relatedness | None:
    if text is None or not text.strip():
        return None
    if overrides:
        for spelled, value in overrides.items():
            if _key(spelled) == _key(text):
                return Relatedness(value)
    key = _key(text)
    if key in RELATEDNESS:
        return RELATEDNESS[key]
    if key in NO_DEGREE:
        raise UnreadableValue(f"causality {text!r} states no degree of relatedness (not yet assessable)")
    raise UnreadableValue(f"unknown causality {text!r}")


GRADE_CODES = {"C41338": 1, "C41339": 2, "C41340": 3, "C41337": 4, "C48275": 5}
BARE_GRADE = re.compile(r"^([1-5])(?:\.0+)?$")
GRADE_WORD = re.compile(r"(?<![A-Z0-9])(?:GRADE|GR\.?|G)\s*([0-9]+(?:[.,\-\u2013/][0-9]+)?)(?![0-9])", re.IGNORECASE)


def grade(text: str | None, overrides: Mapping[str, int] | None = None) -> int | None:
    """`3`, `Grade 3`, `CTCAE 5.0 Grade 3`, `Grade 3 Severe Adverse Event`, NCI C41340.

    Only a bare number or a number after the word grade counts, and only one: a version number (`CTCAE 5.0`),
    a range (`Grade 3-4`) or two different grades are refused rather than guessed. Severity words are not grades.
    """
    if text is None or not text.strip():
        return None
    stripped = text.strip()
    if overrides and stripped in overrides:
        return overrides[stripped]
    if stripped.upper() in GRADE_CODES:
        return GRADE_CODES[stripped.upper()]
    bare = BARE_GRADE.fullmatch(stripped)
    if bare:
        return int(bare.group(1))
    stated = set(GRADE_WORD.findall(stripped))
    if len(stated) == 1:
        [number] = stated
        if number in {"1", "2", "3", "4", "5"}:
            return int(number)
    raise UnreadableValue(f"expected a CTCAE grade 1-5 (`3` or `Grade 3`), got {text!r}")


def small_int(text: str | None, *, digits: int = 9) -> int | None:
    """A non-negative integer written in ASCII digits (`str.isdigit` also accepts `²`, which `int` refuses), of
    at most `digits` digits; None for anything else, so callers decide how to refuse it."""
    value = (text or "").strip()
    if not value or len(value) > digits or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def partial_date(text: str | None) -> str | None:
    """ISO with its precision (`2003`, `2012-02`, `2013-03-07`), a datetime's date, or Rave's `01 JAN 2008`.

    Rave unknown tokens (`UN JAN 2008`, `UN UNK 2008`) keep only the precision that is known.
    """
    if text is None or not text.strip():
        return None
    value = text.strip()
    if PARTIAL_ISO.fullmatch(value):
        return _checked(value)
    if len(value) > 10 and value[10] in "T " and PARTIAL_ISO.fullmatch(value[:10]):
        return _checked(value[:10])
    rave = RAVE_DATE.fullmatch(value)
    if rave:
        day, month, year = rave.groups()
        if month.upper() in {"UNK", "UN"}:
            return _checked(year)
        if month.upper() not in MONTHS:
            raise UnreadableValue(f"unknown month in {text!r}")
        if day.upper() in {"UN", "UNK"}:
            return _checked(f"{year}-{MONTHS[month.upper()]:02d}")
        return _checked(f"{year}-{MONTHS[month.upper()]:02d}-{int(day):02d}")
    raise UnreadableValue(f"expected a date (YYYY-MM-DD, partial YYYY-MM or YYYY, or DD MON YYYY), got {text!r}")


def _checked(value: str) -> str:
    match = PARTIAL_ISO.fullmatch(value)
    assert match is not None
    year, month, day = match.groups()
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError as exc:
        raise UnreadableValue(f"impossible date {value!r}") from exc
    return value


def moment(text: str | None, *, zone: ZoneInfo, flags: list[str], field: str) -> datetime | None:
    """A datetime; a naive one is read in the source's time zone and a date alone as its midnight, both flagged."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    rave = RAVE_DATE.fullmatch(value)
    if rave:
        value = partial_date(value) or value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UnreadableValue(f"expected an ISO 8601 date-time, got {text!r}") from exc
    if len(value) == 10:
        flags.append(f"DATE_ONLY:{field}")
        parsed = datetime.combine(parsed.date(), time(0, 0), tzinfo=zone)
    elif parsed.tzinfo is None:
        flags.append(f"NAIVE_TIME_IN_SOURCE_ZONE:{field}")
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def lab_value(text: str) -> str:
    """The result as exact text: a number, or a censored `<0.2`; other text (`NEG`) is kept as is."""
    value = text.strip()
    censored = CENSORED.fullmatch(value)
    if censored:
        sign = {"≤": "<=", "≥": ">="}.get(censored.group(1), censored.group(1))
        return f"{sign}{censored.group(2)}"
    return value


def decimal_or_none(text: str | None) -> Decimal | None:
    if text is None or not NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        return None


def range_from_text(text: str | None) -> tuple[Decimal, Decimal] | None:
    """`0.0-0.2`, `(Normal range, Male: 0.6 - 1.2)`, `4 to 16`: the first low-high pair in the text."""
    if not text:
        return None
    match = RANGE_TEXT.search(text)
    if not match:
        return None
    low, high = Decimal(match.group(1)), Decimal(match.group(2))
    return (low, high) if low <= high else None


UNIT_SPELLINGS = {
    "THOU/UL": "10^3/uL",
    "K/UL": "10^3/uL",
    "K/MCL": "10^3/uL",
    "10*3/UL": "10^3/uL",
    "10^3/UL": "10^3/uL",
    "X10E3/UL": "10^3/uL",
    "GI/L": "10^9/L",
    "10*9/L": "10^9/L",
    "10^9/L": "10^9/L",
    "X10E9/L": "10^9/L",
    "10*12/L": "10^12/L",
    "TI/L": "10^12/L",
    "G/DL": "g/dL",
    "G/L": "g/L",
    "MG/DL": "mg/dL",
    "UMOL/L": "umol/L",
    "\u039cMOL/L": "umol/L",  # µmol/L and μmol/L both upper-case to a Greek capital mu
    "MMOL/L": "mmol/L",
    "U/L": "U/L",
    "IU/L": "U/L",
}


def unit(text: str | None) -> str | None:
    """One spelling per unit (`THOU/uL`, `K/mcL`, `10*3/uL` -> `10^3/uL`); numbers are never converted here.

    Safety converts values exactly from whatever unit arrives; folding spellings just keeps them comparable.
    """
    if text is None or not text.strip():
        return None
    value = text.strip()
    return UNIT_SPELLINGS.get(value.upper(), UNIT_SPELLINGS.get(value.upper().replace("MC", "U"), value))


PLAUSIBLE_ULN: Mapping[tuple[str, str], tuple[Decimal, Decimal]] = {
    ("HGB", "g/dL"): (Decimal(11), Decimal(22)),
    ("HGB", "g/L"): (Decimal(110), Decimal(220)),
    ("HGB", "mmol/L"): (Decimal("6.8"), Decimal("13.7")),
    ("PLAT", "10^9/L"): (Decimal(250), Decimal(600)),
    ("PLAT", "10^3/uL"): (Decimal(250), Decimal(600)),
    ("CREAT", "mg/dL"): (Decimal("0.8"), Decimal("2")),
    ("CREAT", "umol/L"): (Decimal(70), Decimal(180)),
}


def range_fits_unit(test: str | None, unit_: str | None, uln: Decimal | None) -> bool:
    """False when the upper limit is implausible for the unit (HL7's `g/dL` label on mmol/L numbers)."""
    if test is None or unit_ is None or uln is None:
        return True
    band = PLAUSIBLE_ULN.get((test, unit_))
    return band is None or band[0] <= uln <= band[1]
