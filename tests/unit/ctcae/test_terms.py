"""Investigator-graded AEs checked against the CTCAE v5.0 term list."""

from __future__ import annotations

from services.safety.ctcae import all_terms, check_ae, lookup_meddra, lookup_term
from services.safety.ctcae.criteria import criteria
from services.safety.ctcae.terms import GRADE_NOT_DEFINED, INVALID_GRADE, MEDDRA_MISMATCH, UNKNOWN_TERM


def test_full_term_list() -> None:
    terms = all_terms()
    assert len(terms) == 837
    assert len({t.meddra_code for t in terms}) == 837


def test_known_term_ok() -> None:
    assert check_ae("Febrile neutropenia", 3, "10016288") == []
    assert check_ae("  febrile   NEUTROPENIA ", 4) == []


def test_unknown_term_flagged() -> None:
    [flag] = check_ae("Neutropenia fever", 3)
    assert flag.code == UNKNOWN_TERM
    assert "Neutropenia fever" in flag.message


def test_unknown_term_hints_meddra_term() -> None:
    [flag] = check_ae("Tiredness", 2, "10016256")
    assert flag.code == UNKNOWN_TERM and "'Fatigue'" in flag.message


def test_grade_5_on_term_without_grade_5() -> None:
    [flag] = check_ae("Fatigue", 5)
    assert flag.code == GRADE_NOT_DEFINED
    assert check_ae("Alopecia", 3)[0].code == GRADE_NOT_DEFINED
    assert check_ae("Blood lactate dehydrogenase increased", 2)[0].code == GRADE_NOT_DEFINED
    assert check_ae("Leukocytosis", 1)[0].code == GRADE_NOT_DEFINED


def test_invalid_grades() -> None:
    for grade in (0, 6, "3", None, True, 2.0):
        assert [f.code for f in check_ae("Fatigue", grade)] == [INVALID_GRADE]


def test_meddra_mismatch() -> None:
    [flag] = check_ae("Fatigue", 2, "10002272")
    assert flag.code == MEDDRA_MISMATCH
    assert check_ae("Fatigue", 2, 10016256) == []


def test_several_flags_at_once() -> None:
    codes = {f.code for f in check_ae("Fatigue", 5, "123")}
    assert codes == {MEDDRA_MISMATCH, GRADE_NOT_DEFINED}


def test_lookup() -> None:
    info = lookup_term("anemia")
    assert info is not None
    assert (info.term, info.meddra_code, info.soc) == ("Anemia", "10002272", "Blood and lymphatic system disorders")
    assert info.grades == frozenset({1, 2, 3, 4, 5})
    assert lookup_meddra("10002272") == info
    assert lookup_term("no such term") is None


def test_every_lab_rule_names_a_ctcae_term() -> None:
    for crit in criteria().values():
        assert lookup_term(crit.ctcae_term) is not None, crit.ctcae_term
