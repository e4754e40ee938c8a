"""The protocol's lab-alert and data-quality options: what the shipped file chooses, and errors with their path."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from shared.protocol import DEFAULT_PROTOCOL, ProtocolError, load_protocol, parse_protocol


def shipped() -> dict[str, object]:
    text = resources.files("shared.protocols").joinpath(DEFAULT_PROTOCOL).read_text(encoding="utf-8")
    loaded: dict[str, object] = yaml.safe_load(text)
    return loaded


def problems_of(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(yaml.safe_dump(raw))
    return caught.value.problems


def test_shipped_file_reviews_lab_toxicities_within_a_day_and_routes_findings() -> None:
    protocol = load_protocol(None)
    assert protocol.lab_alerts.review_hours == 24
    assert protocol.data_quality.notify_roles == ["data_manager"]
    assert protocol.data_quality.code_roles["implausible_value"] == ["safety_officer"]
    assert protocol.data_quality.code_roles["ambiguous_value"] == ["safety_officer"]
    assert protocol.contacts_with_role("data_manager")


def test_review_hours_null_means_no_clock() -> None:
    raw = shipped()
    raw["lab_alerts"] = {**raw["lab_alerts"], "review_hours": None}  # type: ignore[dict-item]
    assert parse_protocol(yaml.safe_dump(raw)).lab_alerts.review_hours is None


def test_invalid_review_hours_names_its_path() -> None:
    raw = shipped()
    raw["lab_alerts"] = {**raw["lab_alerts"], "review_hours": 0}  # type: ignore[dict-item]
    assert any(p.startswith("lab_alerts.review_hours:") for p in problems_of(raw))


def test_data_quality_roles_must_be_contacts() -> None:
    raw = shipped()
    raw["data_quality"] = {"notify_roles": ["data_manager"], "code_roles": {"unknown_unit": ["lab_director"]}}
    assert any("data_quality.code_roles.unknown_unit" in p and "lab_director" in p for p in problems_of(raw))


def test_contact_sites_are_optional() -> None:
    raw = shipped()
    contacts = list(raw["contacts"])  # type: ignore[call-overload]
    contacts.append({"name": "DM 2", "email": "dm2@site.example", "role": "data_manager", "sites": ["102"]})
    raw["contacts"] = contacts
    assert parse_protocol(yaml.safe_dump(raw)).contacts_with_role("data_manager")[-1].sites == ["102"]


def test_shipped_population_bounds_and_their_validation() -> None:
    assert load_protocol(None).data_quality.population_max["Neutrophil count decreased"] == 50
    raw = shipped()
    raw["data_quality"] = {"population_max": {"Neutrophil count decreased": 0}}
    assert any(p.startswith("data_quality.population_max.Neutrophil count decreased:") for p in problems_of(raw))
