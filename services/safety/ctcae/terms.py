"""The CTCAE v5.0 term list (837 terms) and data-quality checks for investigator-graded AEs.

The list is our own package resource (`data/ctcae_v5_terms.csv`, derived by scripts/build_ctcae_terms.py),
read once on first use. Checks return flags, never raise: a bad AE record is a data-quality finding for a
person to resolve, not a crash in the pipeline.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from services.safety.ctcae.criteria import fold


@dataclass(frozen=True, slots=True)
class TermInfo:
    term: str
    meddra_code: str
    soc: str
    grades: frozenset[int]


@dataclass(frozen=True, slots=True)
class QualityFlag:
    """A data-quality finding on an AE record: a stable `code` for machines and a message for people."""

    code: str
    message: str


UNKNOWN_TERM = "ctcae_unknown_term"
INVALID_GRADE = "ctcae_invalid_grade"
GRADE_NOT_DEFINED = "ctcae_grade_not_defined"
MEDDRA_MISMATCH = "ctcae_meddra_mismatch"


@functools.cache
def _terms() -> tuple[Mapping[str, TermInfo], Mapping[str, TermInfo]]:
    text = resources.files("services.safety.ctcae").joinpath("data/ctcae_v5_terms.csv").read_text("utf-8")
    by_name: dict[str, TermInfo] = {}
    by_code: dict[str, TermInfo] = {}
    for row in csv.DictReader(io.StringIO(text)):
        info = TermInfo(row["term"], row["meddra_code"], row["soc"], frozenset(int(g) for g in row["grades"]))
        by_name[fold(info.term)] = info
        by_code[info.meddra_code] = info
    return by_name, by_code


def all_terms() -> tuple[TermInfo, ...]:
    return tuple(_terms()[0].values())


def lookup_term(term: str) -> TermInfo | None:
    """A CTCAE v5.0 term by name, ignoring case and extra whitespace."""
    return _terms()[0].get(fold(term))


def lookup_meddra(code: str | int) -> TermInfo | None:
    return _terms()[1].get(str(code).strip())


def check_ae(term: str, grade: object, meddra_code: str | int | None = None) -> list[QualityFlag]:
    """Flags for an investigator-graded AE whose term, grade or MedDRA code do not fit CTCAE v5.0."""
    flags: list[QualityFlag] = []
    info = lookup_term(term)
    code = None if meddra_code is None or str(meddra_code).strip() == "" else str(meddra_code).strip()
    if info is None:
        hint = ""
        by_code = lookup_meddra(code) if code is not None else None
        if by_code is not None:
            hint = f"; MedDRA code {code} is {by_code.term!r}"
        flags.append(QualityFlag(UNKNOWN_TERM, f"{term!r} is not a CTCAE v5.0 term{hint}"))
    elif code is not None and code != info.meddra_code:
        flags.append(
            QualityFlag(
                MEDDRA_MISMATCH,
                f"MedDRA code {code} does not match {info.term!r} (CTCAE v5.0 code {info.meddra_code})",
            )
        )
    if isinstance(grade, bool) or not isinstance(grade, int) or not 1 <= grade <= 5:
        flags.append(QualityFlag(INVALID_GRADE, f"grade {grade!r} is not an integer from 1 to 5"))
    elif info is not None and grade not in info.grades:
        defined = ", ".join(str(g) for g in sorted(info.grades))
        flags.append(
            QualityFlag(GRADE_NOT_DEFINED, f"{info.term!r} has no grade {grade} in CTCAE v5.0 (defined: {defined})")
        )
    return flags
