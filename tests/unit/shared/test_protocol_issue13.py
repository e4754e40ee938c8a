"""The eligibility, dosing and product-release sections: shipped values, and errors that name their path."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest
import yaml

from shared.protocol import DEFAULT_PROTOCOL, ProtocolError, load_protocol, parse_protocol

K8S_COPY = Path(__file__).parents[3] / "deploy" / "k8s" / "overlays" / "example" / "protocol.yaml"


def shipped() -> dict:  # type: ignore[type-arg]
    text = resources.files("shared.protocols").joinpath(DEFAULT_PROTOCOL).read_text(encoding="utf-8")
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def problems_of(document: dict) -> list[str]:  # type: ignore[type-arg]
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(yaml.safe_dump(document), "p.yaml")
    return caught.value.problems


def test_the_trial_values_are_in_the_shipped_file() -> None:
    protocol = load_protocol(None)
    rules, dosing, release = protocol.eligibility, protocol.dosing, protocol.product_release
    assert rules is not None and dosing is not None and release is not None
    hgb = next(c for c in rules.cytopenia_any if "HGB" in c.tests)
    assert (hgb.limit, hgb.unit, hgb.operator) == (Decimal(70), "g/L", "<=")  # the registry's "g/dL" is a typo
    assert rules.car_t_min_days == 21
    assert {h.code: h.within_days for h in rules.history} == {
        "anti_tumour_therapy": 31,
        "live_vaccine": 28,
        "severe_infection": 7,
    }
    assert "principal_investigator" in rules.notify_roles
    assert dosing.premedication is not None and dosing.premedication.drug == "dexamethasone"
    assert release.min_viability_percent == 85


def test_the_second_example_shows_other_values() -> None:
    text = resources.files("shared.protocols").joinpath("example-3plus3-dose-levels.yaml").read_text(encoding="utf-8")
    protocol = parse_protocol(text)
    assert protocol.eligibility is not None and protocol.eligibility.screening_window_days == 28
    assert protocol.product_release is not None and protocol.product_release.release_required_on_every_dose


def test_the_k8s_copy_still_validates() -> None:
    assert load_protocol(K8S_COPY).trial_id == "NCT07212335"


def test_a_lab_criterion_needs_a_unit_or_of_uln_and_the_error_names_its_path() -> None:
    document = shipped()
    document["eligibility"]["exclude_labs"][0]["unit"] = "umol/L"  # creatinine has of_uln too
    problems = problems_of(document)
    assert any(p.startswith("eligibility.exclude_labs.0") and "either a unit" in p for p in problems)


def test_section_roles_must_be_contacts() -> None:
    document = shipped()
    document["product_release"]["notify_roles"] = ["qa_person"]
    assert any("product_release.notify_roles" in p and "qa_person" in p for p in problems_of(document))


def test_bad_values_name_their_paths() -> None:
    document = shipped()
    document["dosing"]["cells_per_kg_tolerance_percent"] = -5
    document["product_release"]["required_tests"] = ["sterility", "astrology"]
    document["eligibility"]["history"][0]["code"] = "Bad Code"
    problems = problems_of(document)
    assert any(p.startswith("dosing.cells_per_kg_tolerance_percent") for p in problems)
    assert any(p.startswith("product_release.required_tests.1") for p in problems)
    assert any(p.startswith("eligibility.history.0.code") for p in problems)


def test_sentinel_protocol_check_shows_the_sections_and_names_an_error_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import main

    assert main(["protocol", "check", str(K8S_COPY.parents[4] / "shared" / "protocols" / DEFAULT_PROTOCOL)]) == 0
    out = capsys.readouterr().out
    assert "eligibility at the first dose: screening labs within 14 days" in out
    assert "product release: viability >= 85%" in out
    document = shipped()
    document["product_release"]["min_viability_percent"] = 185
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["protocol", "check", str(path)]) == 1
    assert "product_release.min_viability_percent" in capsys.readouterr().err
