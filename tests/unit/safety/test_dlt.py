"""The DLT rule, pure: criteria of the shipped protocol, baseline cytopenias, causality, and state moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.safety.ae_terms import map_ae_term
from services.safety.dlt import (
    FEBRILE_NEUTROPENIA,
    HAEMATOLOGICAL,
    AeFacts,
    Classification,
    DltSignal,
    DltState,
    LabPoint,
    classify,
    classify_labs,
    fold_versions,
    transition,
)
from services.safety.dlt_window import infusion_window
from shared.events import Relatedness
from shared.protocol import DltRules, FebrileNeutropenia, Protocol

WINDOW = infusion_window(first_infusion=datetime(2026, 3, 2, 10, tzinfo=UTC), site_day=None, days=28)


def ae(
    term: str = "Pneumonitis",
    grade: int | None = 3,
    relatedness: Relatedness | None = Relatedness.POSSIBLE,
    onset: str | None = "2026-03-10",
    version: int = 1,
    status: str | None = None,
) -> AeFacts:
    return AeFacts("AE-1", version, term, grade, relatedness, onset, status)


def verdict(protocol: Protocol, facts: AeFacts, baselines: dict[str, int] | None = None) -> Classification:
    return classify(facts, rules=protocol.dlt, window=WINDOW, baseline_grades=baselines or {})


def test_grade_3_possibly_related_non_haematological_is_suspected(protocol: Protocol) -> None:
    result = verdict(protocol, ae())
    assert result.meets and result.criterion == "non_haematological_grade3"
    assert "study day 9" in result.reason and "possible" in result.reason


@pytest.mark.parametrize("relatedness", [Relatedness.NOT_RELATED, Relatedness.UNLIKELY])
def test_unrelated_grade_3_is_not(protocol: Protocol, relatedness: Relatedness) -> None:
    result = verdict(protocol, ae(relatedness=relatedness))
    assert not result.meets
    assert "relatedness" in result.reason


def test_relatedness_not_yet_assessed_counts_as_related(protocol: Protocol) -> None:
    result = verdict(protocol, ae(relatedness=None))
    assert result.meets
    assert "not yet assessed" in result.reason


def test_grade_2_is_not_and_grade_5_unrelated_is(protocol: Protocol) -> None:
    assert not verdict(protocol, ae(grade=2)).meets
    fatal = verdict(protocol, ae(term="Sepsis", grade=5, relatedness=Relatedness.NOT_RELATED))
    assert fatal.meets and fatal.criterion == "grade5"


def test_infusion_reaction_counts_whatever_its_causality_and_term_case(protocol: Protocol) -> None:
    result = verdict(protocol, ae(term="infusion RELATED reaction", relatedness=Relatedness.NOT_RELATED))
    assert result.meets and result.criterion == "infusion_reaction_grade3"


def test_ungraded_ae_is_not_yet_a_dlt(protocol: Protocol) -> None:
    result = verdict(protocol, ae(grade=None))
    assert not result.meets and "no grade" in result.reason


def test_onset_outside_the_window_is_not(protocol: Protocol) -> None:
    assert verdict(protocol, ae(onset="2026-03-29")).meets  # day 28
    outside = verdict(protocol, ae(onset="2026-03-30"))  # day 29
    assert not outside.meets and "study day 29" in outside.reason
    assert not verdict(protocol, ae(onset="2026-03-01")).meets  # the day before the infusion


def test_partial_onset_that_could_be_inside_counts_and_says_so(protocol: Protocol) -> None:
    result = verdict(protocol, ae(onset="2026-03"))  # days 0-30: some inside
    assert result.meets
    assert "conservative" in result.reason


def test_no_window_means_no_dlt_yet(protocol: Protocol) -> None:
    result = classify(ae(), rules=protocol.dlt, window=None, baseline_grades={})
    assert not result.meets and "no infusion recorded" in result.reason


def test_an_ae_the_site_took_back_is_not(protocol: Protocol) -> None:
    result = verdict(protocol, ae(status="entered_in_error"))
    assert not result.meets and "entered in error" in result.reason


def test_cytopenia_counts_only_when_worse_than_baseline(protocol: Protocol) -> None:
    neutropenia = ae(term="Neutrophil count decreased", grade=4, relatedness=Relatedness.NOT_RELATED)
    same = verdict(protocol, neutropenia, {"Neutrophil count decreased": 4})
    assert not same.meets and "baseline grade 4" in same.reason
    worse = verdict(protocol, neutropenia, {"neutrophil count decreased": 3})  # any case
    assert worse.meets and worse.criterion == HAEMATOLOGICAL
    assert "worse than baseline grade 3" in worse.reason


def test_cytopenia_without_a_baseline_lab_counts_from_grade_3(protocol: Protocol) -> None:
    result = verdict(protocol, ae(term="Anemia", grade=3))
    assert result.meets and "no baseline lab grade" in result.reason
    assert not verdict(protocol, ae(term="Anemia", grade=2)).meets


def test_fatal_cytopenia_counts_under_grade5_even_with_grade_4_baseline(protocol: Protocol) -> None:
    result = verdict(protocol, ae(term="Platelet count decreased", grade=5), {"Platelet count decreased": 4})
    assert result.meets and result.criterion == "grade5"


def test_fold_keeps_the_worst_grade_and_the_latest_causality() -> None:
    folded = fold_versions(
        [
            ae(version=2, grade=2, relatedness=Relatedness.NOT_RELATED, onset="2026-03-11"),
            ae(version=1, grade=3, relatedness=Relatedness.PROBABLE),
        ]
    )
    assert (folded.version, folded.grade, folded.relatedness, folded.onset) == (
        2,
        3,
        Relatedness.NOT_RELATED,
        "2026-03-11",
    )
    with pytest.raises(ValueError):
        fold_versions([])


MEETS = Classification(True, "c", "r")
MISSES = Classification(False, None, "r")


@pytest.mark.parametrize(
    ("current", "verdict_", "grade", "decided", "state", "signal"),
    [
        (None, MEETS, 3, None, DltState.SUSPECTED, DltSignal.SUSPECTED),
        (None, MISSES, 3, None, None, None),
        (DltState.SUSPECTED, MEETS, 4, None, DltState.SUSPECTED, None),
        (DltState.SUSPECTED, MISSES, 3, None, DltState.WITHDRAWN, DltSignal.WITHDRAWN),
        (DltState.WITHDRAWN, MEETS, 3, None, DltState.SUSPECTED, DltSignal.SUSPECTED),
        (DltState.WITHDRAWN, MISSES, 3, None, DltState.WITHDRAWN, None),
        (DltState.CONFIRMED, MISSES, 3, 3, DltState.CONFIRMED, None),
        (DltState.CONFIRMED, MEETS, 5, 3, DltState.CONFIRMED, None),
        (DltState.REJECTED, MEETS, 3, 3, DltState.REJECTED, None),
        (DltState.REJECTED, MEETS, 4, 3, DltState.SUSPECTED, DltSignal.SUSPECTED),
        (DltState.REJECTED, MISSES, 4, 3, DltState.REJECTED, None),
    ],
)
def test_transitions(
    current: DltState | None,
    verdict_: Classification,
    grade: int,
    decided: int | None,
    state: DltState | None,
    signal: DltSignal | None,
) -> None:
    step = transition(current, verdict_, grade=grade, decided_grade=decided)
    assert (step.state, step.signal) == (state, signal)


@pytest.mark.parametrize(
    ("current", "verdict_", "grade", "state", "signal"),
    [
        (DltState.SUSPECTED, MEETS, 4, DltState.SUSPECTED, None),  # still worse than what the officer rejected
        (DltState.SUSPECTED, MEETS, 3, DltState.REJECTED, DltSignal.WITHDRAWN),  # the worse value was corrected
        (DltState.SUSPECTED, MISSES, 4, DltState.REJECTED, DltSignal.WITHDRAWN),  # the AE was taken back
        (DltState.WITHDRAWN, MEETS, 3, DltState.REJECTED, None),
        (DltState.WITHDRAWN, MEETS, 4, DltState.SUSPECTED, DltSignal.SUSPECTED),
    ],
)
def test_a_reopened_rejection_stands_again_when_its_new_evidence_goes(
    current: DltState, verdict_: Classification, grade: int, state: DltState, signal: DltSignal | None
) -> None:
    """The state of a record with an officer's rejection on file (grade 3 rejected) is a function of that rejection
    and the data as they stand, never of what was seen in between: the same data batched or not, same state."""
    step = transition(current, verdict_, grade=grade, decided_grade=3, rejected=True)
    assert (step.state, step.signal) == (state, signal)


# --- point 9: haematological rules for a population entering at grade 3-4 -----------------------------------


def test_febrile_neutropenia_has_its_own_relatedness_rule(protocol: Protocol) -> None:
    """NCT07212335 counts febrile neutropenia whatever its causality; a stricter protocol can ask for 'possible'."""
    unrelated = ae(term="Febrile neutropenia", grade=3, relatedness=Relatedness.NOT_RELATED)
    result = verdict(protocol, unrelated)
    assert result.meets and result.criterion == FEBRILE_NEUTROPENIA and "whatever its causality" in result.reason
    haem = protocol.dlt.haematological
    assert haem is not None
    strict_haem = haem.model_copy(update={"febrile_neutropenia": FebrileNeutropenia(min_relatedness="possible")})
    strict = protocol.dlt.model_copy(update={"haematological": strict_haem})
    refused = classify(unrelated, rules=strict, window=WINDOW, baseline_grades={})
    assert not refused.meets and "relatedness below possible" in refused.reason
    assert classify(ae(term="Febrile neutropenia", grade=3), rules=strict, window=WINDOW, baseline_grades={}).meets


def test_cytopenia_relatedness_is_a_per_criterion_option(protocol: Protocol) -> None:
    neutropenia = ae(term="Neutrophil count decreased", grade=4, relatedness=Relatedness.NOT_RELATED)
    assert verdict(protocol, neutropenia, {"Neutrophil count decreased": 3}).meets  # NCT: any causality
    haem = protocol.dlt.haematological
    assert haem is not None
    strict = protocol.dlt.model_copy(update={"haematological": haem.model_copy(update={"min_relatedness": "possible"})})
    result = classify(neutropenia, rules=strict, window=WINDOW, baseline_grades={"Neutrophil count decreased": 3})
    assert not result.meets and "relatedness" in result.reason


def test_worsening_needs_the_protocols_number_of_grades(protocol: Protocol) -> None:
    haem = protocol.dlt.haematological
    assert haem is not None
    two = protocol.dlt.model_copy(update={"haematological": haem.model_copy(update={"min_worsening_grades": 2})})
    plt = ae(term="Platelet count decreased", grade=4)
    assert not classify(plt, rules=two, window=WINDOW, baseline_grades={"Platelet count decreased": 3}).meets
    assert classify(plt, rules=two, window=WINDOW, baseline_grades={"Platelet count decreased": 2}).meets


def test_a_grade_4_baseline_cannot_worsen_but_febrile_neutropenia_and_grade_5_still_count(protocol: Protocol) -> None:
    baseline = {"Neutrophil count decreased": 4, "Platelet count decreased": 4}
    assert not verdict(protocol, ae(term="Neutrophil count decreased", grade=4), baseline).meets
    assert verdict(protocol, ae(term="Febrile neutropenia", grade=3), baseline).meets
    assert verdict(protocol, ae(term="Platelet count decreased", grade=5), baseline).criterion == "grade5"


# --- point 10: terms, not spellings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verbatim", "code", "expected"),
    [
        ("Thrombocytopenia", None, ("Platelet count decreased",)),
        ("THROMBOCYTOPENIA ", None, ("Platelet count decreased",)),
        ("Neutropenia", None, ("Neutrophil count decreased",)),
        ("Anaemia", None, ("Anemia",)),
        ("anemia", None, ("Anemia",)),
        ("Leucopenia", None, ("White blood cell decreased",)),
        ("Lymphopenia", None, ("Lymphocyte count decreased",)),
        ("Pancytopenia", None, ("Anemia", "Neutrophil count decreased", "Platelet count decreased")),
        ("Oedema limbs", None, ("Edema limbs",)),
        ("low plts (verbatim)", "10035528", ("Platelet count decreased",)),
        ("Diarrhoea", None, ("Diarrhea",)),
    ],
)
def test_terms_map_to_ctcae_by_code_synonym_and_spelling(
    verbatim: str, code: str | None, expected: tuple[str, ...]
) -> None:
    mapping = map_ae_term(verbatim, ctcae_term=None, meddra_code=code)
    assert mapping.terms == expected


def test_an_unknown_term_maps_to_nothing_and_never_to_a_near_miss() -> None:
    assert not map_ae_term("Hypokalaemia-ish feeling", ctcae_term=None, meddra_code=None).mapped
    assert map_ae_term("Hyperkalaemia", ctcae_term=None, meddra_code=None).terms == ("Hyperkalemia",)
    assert map_ae_term("Hypokalemia", ctcae_term=None, meddra_code=None).terms == ("Hypokalemia",)
    assert map_ae_term("Bleh", ctcae_term=None, meddra_code=None, synonyms={"bleh": "Fatigue"}).terms == ("Fatigue",)


def test_a_verbatim_thrombocytopenia_is_haematological_not_a_non_haematological_dlt(protocol: Protocol) -> None:
    mapped = map_ae_term("Thrombocytopenia", ctcae_term=None, meddra_code=None)
    facts = AeFacts("AE-1", 1, mapped.terms[0], 4, Relatedness.POSSIBLE, "2026-03-10", terms=mapped.terms)
    result = verdict(protocol, facts, {"Platelet count decreased": 4})
    assert not result.meets and "baseline grade 4" in result.reason
    pancytopenia = map_ae_term("Pancytopenia", ctcae_term=None, meddra_code=None)
    facts = AeFacts("AE-2", 1, pancytopenia.terms[0], 4, None, "2026-03-10", terms=pancytopenia.terms)
    worse = verdict(protocol, facts, {"Anemia": 4, "Neutrophil count decreased": 4, "Platelet count decreased": 3})
    assert worse.meets and worse.criterion == HAEMATOLOGICAL  # the platelets could have worsened


# --- point 9 on labs, pure ---------------------------------------------------------------------------------


def points(*grades_by_day: tuple[int, int], baseline_day: int | None = None) -> list[LabPoint]:
    start = datetime(2026, 3, 2, 10, tzinfo=UTC)
    out = [LabPoint(f"R{day}", start + timedelta(days=day), grade, False) for day, grade in grades_by_day]
    if baseline_day is not None:
        out.append(LabPoint("B", start + timedelta(days=baseline_day), 4, True))
    return out


def lab_rules(protocol: Protocol, **changes: object) -> DltRules:
    haem = protocol.dlt.haematological
    assert haem is not None
    return protocol.dlt.model_copy(update={"haematological": haem.model_copy(update=changes)})


def test_labs_a_one_grade_worsening_fires_and_a_lab_before_the_infusion_does_not(protocol: Protocol) -> None:
    term = "Neutrophil count decreased"
    finding = classify_labs(term, points((5, 4)), rules=protocol.dlt, window=WINDOW, baseline=3)
    assert finding is not None and finding.rule == HAEMATOLOGICAL and finding.result_id == "R5"
    assert classify_labs(term, points((-1, 4)), rules=protocol.dlt, window=WINDOW, baseline=3) is None
    assert classify_labs(term, points((5, 4)), rules=protocol.dlt, window=WINDOW, baseline=4) is None
    assert classify_labs(term, points((5, 4)), rules=protocol.dlt, window=None, baseline=3) is None
    off = lab_rules(protocol, labs_count=False)
    assert classify_labs(term, points((5, 4)), rules=off, window=WINDOW, baseline=3) is None


def test_labs_failure_to_recover_needs_a_worsening_at_the_protocols_grade(protocol: Protocol) -> None:
    rules = lab_rules(protocol, min_worsening_grades=4, grade4_max_days=None, recover_by_day=20)
    term = "Platelet count decreased"
    stuck = classify_labs(term, points((3, 4), (10, 4), (21, 4)), rules=rules, window=WINDOW, baseline=3)
    assert stuck is not None and stuck.rule == "haematological_failure_to_recover" and stuck.result_id == "R21"
    back = classify_labs(term, points((3, 4), (10, 3), (21, 4)), rules=rules, window=WINDOW, baseline=3)
    assert back is None, "returned to baseline before day 20"
    mild = classify_labs(term, points((3, 1), (21, 1)), rules=rules, window=WINDOW, baseline=0)
    assert mild is None, "a grade 1 that lingers is not a DLT (min_grade 3)"


def test_labs_grade_4_from_baseline_counts_only_when_the_protocol_says_so(protocol: Protocol) -> None:
    term = "Neutrophil count decreased"
    series = points((3, 4), (10, 4), (16, 4))
    assert classify_labs(term, series, rules=protocol.dlt, window=WINDOW, baseline=4) is None
    counting = lab_rules(protocol, grade4_from_baseline_counts=True)
    finding = classify_labs(term, series, rules=counting, window=WINDOW, baseline=4)
    assert finding is not None and finding.rule == "haematological_grade4_prolonged" and finding.result_id == "R16"
