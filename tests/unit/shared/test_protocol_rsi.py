"""The protocol's reference safety information and expedited-reporting section: shipped, and checked with paths."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.protocol import load_protocol
from tests.unit.shared.test_protocol import problems_of, shipped


def test_the_shipped_protocols_name_their_rsi_and_recipients() -> None:
    protocol = load_protocol(None)
    rsi, rules = protocol.reference_safety_information, protocol.expedited_reporting
    assert rsi is not None and rules is not None
    assert rsi.product == "Umbilical-cord mesenchymal stromal cells (UC-MSC)"
    assert (rsi.version, rsi.date) == ("2.0", date(2026, 3, 2))
    reaction = next(r for r in rsi.expected_reactions if r.term == "Infusion related reaction")
    assert (reaction.meddra_code, reaction.max_grade) == ("10051792", 2)
    assert [r.kind for r in rules.recipients] == ["regulator", "ethics_committee", "investigators"]
    assert (rules.fatal_days, rules.completion_days, rules.other_days, rules.follow_up_days) == (7, 15, 15, 15)
    example = Path(__file__).parents[3] / "shared" / "protocols" / "example-3plus3-dose-levels.yaml"
    other = load_protocol(example)
    assert other.reference_safety_information is not None and other.expedited_reporting is not None
    assert not other.expedited_reporting.follow_up_reports


def _with(**changes: Any) -> dict[str, Any]:
    document = shipped()
    for dotted, value in changes.items():
        node = document
        *path, last = dotted.split("__")
        for key in path:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
    return document


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        (
            {"reference_safety_information__expected_reactions__0__max_grade": 6},
            "reference_safety_information.expected_reactions.0.max_grade",
        ),
        (
            {"reference_safety_information__expected_reactions__1__meddra_code": "123"},
            "reference_safety_information.expected_reactions.1.meddra_code",
        ),
        ({"reference_safety_information__date": "last spring"}, "reference_safety_information.date"),
        ({"reference_safety_information__version": ""}, "reference_safety_information.version"),
        ({"expedited_reporting__fatal_days": 8}, "expedited_reporting.fatal_days"),
        ({"expedited_reporting__other_days": 30}, "expedited_reporting.other_days"),
        ({"expedited_reporting__recipients": []}, "expedited_reporting.recipients"),
        ({"expedited_reporting__recipients__0__kind": "press"}, "expedited_reporting.recipients.0.kind"),
        ({"expedited_reporting__country": "France"}, "expedited_reporting.country"),
    ],
)
def test_rsi_and_recipient_errors_name_their_path(changes: dict[str, Any], path: str) -> None:
    problems = problems_of(_with(**changes))
    assert any(p.startswith(path + ":") for p in problems), problems


def test_duplicates_and_inconsistencies_are_refused() -> None:
    document = shipped()
    document["reference_safety_information"]["expected_reactions"].append({"term": "fever"})
    assert any("listed twice" in p and "fever" in p for p in problems_of(document))
    document = shipped()
    document["expedited_reporting"]["recipients"].append(dict(document["expedited_reporting"]["recipients"][0]))
    assert any("recipient ids must be unique" in p for p in problems_of(document))
    document = shipped()
    del document["reference_safety_information"]
    assert any("needs reference_safety_information" in p for p in problems_of(document))
    document = shipped()
    document["expedited_reporting"]["notify_roles"] = ["pharmacovigilance"]
    assert any("expedited_reporting.notify_roles" in p and "pharmacovigilance" in p for p in problems_of(document))


def test_sentinel_protocol_check_explains_an_rsi_error(tmp_path: Path) -> None:
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(_with(reference_safety_information__expected_reactions__0__max_grade=0)))
    cli = Path(sys.executable).with_name("sentinel")
    result = subprocess.run([str(cli), "protocol", "check", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "reference_safety_information.expected_reactions.0.max_grade" in result.stderr
