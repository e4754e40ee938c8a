"""The protocol's response and sample sections: shipped with the trial's values, checked with paths."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.protocol import load_protocol
from tests.unit.shared.test_protocol import problems_of, shipped


def test_the_shipped_protocol_encodes_the_response_and_the_immunology_samples() -> None:
    protocol = load_protocol(None)
    response = protocol.response
    assert response is not None
    assert {name: (x.term, x.complete_min, x.partial_above) for name, x in response.lineages.items()} == {
        "neutrophils": ("Neutrophil count decreased", Decimal("1.5"), Decimal("1.0")),
        "platelets": ("Platelet count decreased", Decimal(100), Decimal(50)),
        "haemoglobin": ("Anemia", Decimal(100), Decimal(80)),
    }
    assert (response.confirm_min_hours, response.transfusion_free_days) == (48, 7)
    assert [(t.name, t.day) for t in response.timepoints] == [("week 4", 28), ("week 8", 56)]
    [immunology] = protocol.samples
    assert immunology.kind == "immunology"
    assert [(v.name, v.day, v.before_first_infusion) for v in immunology.visits] == [
        ("baseline", 0, True),
        ("week 1", 7, False),
        ("week 4", 28, False),
        ("week 8", 56, False),
    ]


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
        ({"response__lineages__neutrophils__complete_min": "1.0"}, "response.lineages.neutrophils"),
        ({"response__lineages__platelets__term": "Platelets"}, "response.lineages.platelets.term"),
        ({"response__lineages": {}}, "response.lineages"),
        ({"response__confirm_min_hours": 0}, "response.confirm_min_hours"),
        ({"response__transfusion_products": ["plasma"]}, "response.transfusion_products.0"),
        ({"response__timepoints__0__day": -1}, "response.timepoints.0.day"),
        ({"samples__0__visits": []}, "samples.0.visits"),
        ({"samples__0__visits__1__window_days": -2}, "samples.0.visits.1.window_days"),
    ],
)
def test_response_and_sample_errors_name_their_path(changes: dict[str, Any], path: str) -> None:
    problems = problems_of(_with(**changes))
    assert any(p.startswith(path + ":") or p.startswith(path + ".") for p in problems), problems


def test_roles_duplicates_and_lineages_are_checked() -> None:
    document = shipped()
    document["samples"][0]["notify_roles"] = ["lab_technician"]
    assert any("samples.0.notify_roles" in p and "lab_technician" in p for p in problems_of(document))
    document = shipped()
    document["response"]["notify_roles"] = ["haematologist"]
    assert any("response.notify_roles" in p for p in problems_of(document))
    document = shipped()
    document["samples"].append(dict(document["samples"][0]))
    assert any("each kind once" in p for p in problems_of(document))
    document = shipped()
    document["response"]["lineages"]["anc"] = {
        "term": "Neutrophil count decreased",
        "complete_min": 2,
        "partial_above": 1,
    }
    assert any("its own CTCAE term" in p for p in problems_of(document))


def test_sentinel_protocol_check_summarises_and_explains(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("sentinel")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(shipped()))
    ok = subprocess.run([str(cli), "protocol", "check", str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0
    assert "neutrophils CR >= 1.5, PR > 1.0" in ok.stdout and "immunology samples: baseline" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with(response__lineages__haemoglobin__partial_above=100)))
    failed = subprocess.run([str(cli), "protocol", "check", str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert "response.lineages.haemoglobin: Value error, complete_min must be above partial_above" in failed.stderr
