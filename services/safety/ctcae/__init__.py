"""CTCAE v5.0: grade lab values, check investigator-graded AEs, grade a CSV in batch."""

from services.safety.ctcae.batch import CsvFormatError, grade_csv
from services.safety.ctcae.grading import (
    AMBIGUOUS_VALUE,
    IMPLAUSIBLE_VALUE,
    UNKNOWN_UNIT,
    Finding,
    Grade,
    grade_test,
    grade_value,
    worst_grade,
)
from services.safety.ctcae.terms import QualityFlag, TermInfo, all_terms, check_ae, lookup_meddra, lookup_term
from services.safety.ctcae.tests_map import terms_for_test

__all__ = [
    "AMBIGUOUS_VALUE",
    "IMPLAUSIBLE_VALUE",
    "UNKNOWN_UNIT",
    "CsvFormatError",
    "Finding",
    "Grade",
    "QualityFlag",
    "TermInfo",
    "all_terms",
    "check_ae",
    "grade_csv",
    "grade_test",
    "grade_value",
    "lookup_meddra",
    "lookup_term",
    "terms_for_test",
    "worst_grade",
]
