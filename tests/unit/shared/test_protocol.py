"""The protocol file: the shipped example loads; every problem names its path in the file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from shared.protocol import DEFAULT_PROTOCOL, ProtocolError, load_protocol, parse_protocol


def shipped() -> dict:
    text = resources.files("shared.protocols").joinpath(DEFAULT_PROTOCOL).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def problems_of(document: object) -> list[str]:
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(yaml.safe_dump(document) if not isinstance(document, str) else document, "p.yaml")
    assert str(caught.value).startswith("p.yaml: ")
    return caught.value.problems


def test_shipped_protocol_loads() -> None:
    protocol = load_protocol(None)
    assert protocol.trial_id == "NCT07212335"
    assert [arm.id for arm in protocol.arms] == ["A", "B", "C"]
    assert protocol.arm("C") is not None and protocol.arm("C").infusions == 4  # type: ignore[union-attr]
    assert protocol.arm("Z") is None
    assert protocol.sae.report_within_hours == 24
    assert [c.email for c in protocol.contacts_with_role("medical_monitor")] == ["medical.monitor@sentinel.example"]


def test_protocol_from_a_path(tmp_path: Path) -> None:
    document = shipped()
    document["sae"]["report_within_hours"] = 12
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(document))
    assert load_protocol(path).sae.report_within_hours == 12


def test_unreadable_path_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ProtocolError) as caught:
        load_protocol(missing)
    assert caught.value.source == str(missing)
    assert "cannot read" in caught.value.problems[0]


def test_field_error_carries_its_path() -> None:
    document = shipped()
    document["arms"][1]["infusions"] = 0
    problems = problems_of(document)
    assert len(problems) == 1
    assert problems[0].startswith("arms.1.infusions: ")


def test_arm_rule_error_points_at_the_arm() -> None:
    document = shipped()
    del document["arms"][2]["interval_days"]
    assert problems_of(document) == ["arms.2: Value error, an arm with more than one infusion needs interval_days"]


def test_several_errors_are_all_listed() -> None:
    document = shipped()
    document["contacts"][0]["email"] = "not-an-address"
    document["arms"][0]["cells_per_kg"] = -1
    problems = problems_of(document)
    assert {p.split(":")[0] for p in problems} == {"contacts.0.email", "arms.0.cells_per_kg"}


def test_unknown_key_is_refused_with_its_path() -> None:
    document = shipped()
    document["sae"]["report_within_days"] = 1
    assert problems_of(document)[0].startswith("sae.report_within_days: ")


def test_duplicate_arm_ids_are_refused() -> None:
    document = shipped()
    document["arms"][1]["id"] = "A"
    assert "arm ids must be unique" in problems_of(document)[0]


def test_notify_role_without_contact_is_refused() -> None:
    document = shipped()
    document["sae"]["notify_roles"] = ["safety_officer", "pi"]
    assert "['pi']" in problems_of(document)[0]


def test_missing_top_level_field_is_named() -> None:
    document = shipped()
    del document["trial_id"]
    assert problems_of(document)[0].startswith("trial_id: ")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text", "a: [unclosed"])
def test_not_a_mapping_or_not_yaml_is_refused(text: str) -> None:
    problems = problems_of(text)
    assert problems[0] in {"the file must be a YAML mapping"} or problems[0].startswith("not valid YAML")


def test_reminder_hours_must_be_positive() -> None:
    document = shipped()
    document["escalation"]["reminders_before_deadline_hours"] = [12, 0]
    problems = problems_of(document)
    assert problems[0].startswith("escalation.reminders_before_deadline_hours.1: ")


def test_an_invalid_clinical_option_is_explained_with_its_path() -> None:
    document = shipped()
    document["dlt"]["anchor"] = "second_infusion"
    [problem] = problems_of(document)
    assert problem.startswith("dlt.anchor: ") and "last_planned_infusion" in problem
    document = shipped()
    document["dlt"]["haematological"]["febrile_neutropenia"]["min_relatedness"] = "maybe"
    [problem] = problems_of(document)
    assert problem.startswith("dlt.haematological.febrile_neutropenia.min_relatedness: ")
    document = shipped()
    document["cohort"]["count"] = "patients"
    assert problems_of(document)[0].startswith("cohort.count: ")
    document = shipped()
    document["study_days"] = "anchor_is_day_2"
    assert problems_of(document)[0].startswith("study_days: ")


def test_required_assessments_must_be_in_the_schedule_and_first_infusion_must_cover_every_infusion() -> None:
    document = shipped()
    document["cohort"]["evaluable_requires_assessments"] = ["week 5 1/2"]
    [problem] = problems_of(document)
    assert "cohort.evaluable_requires_assessments" in problem and "week 5 1/2" in problem
    document = shipped()
    document["dlt"]["window_days"] = 14
    document["dlt"]["anchor"] = "first_infusion"
    [problem] = problems_of(document)
    assert "dlt.anchor" in problem and "['C']" in problem


def test_the_shipped_protocol_makes_the_cautious_choices() -> None:
    protocol = load_protocol(None)
    assert protocol.study_days == "anchor_is_day_0"
    assert protocol.dlt.anchor == "last_planned_infusion"
    assert protocol.cohort.count == "subjects" and protocol.cohort.confirm_recommended_dose
    assert protocol.cohort.evaluable_requires_assessments == ["week 4"]
    haem = protocol.dlt.haematological
    assert haem is not None and haem.labs_count and haem.min_relatedness is None
    assert haem.febrile_neutropenia is not None and haem.febrile_neutropenia.min_relatedness is None
