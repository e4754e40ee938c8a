"""Dosing conformance and product release on the shipped NCT07212335 rules: boundaries and what pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.safety.dosing_conformance import DoseFacts, GivenDose, check_dose
from services.safety.product_release import check_release
from shared.events import PremedicationGiven, ProductRelease
from shared.protocol import DosingRules, ProductReleaseRules, Protocol, load_protocol

AT = datetime(2026, 3, 2, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(None)


@pytest.fixture(scope="module")
def dosing(protocol: Protocol) -> DosingRules:
    assert protocol.dosing is not None
    return protocol.dosing


@pytest.fixture(scope="module")
def release(protocol: Protocol) -> ProductReleaseRules:
    assert protocol.product_release is not None
    return protocol.product_release


def facts(
    *,
    number: int = 1,
    at: datetime = AT,
    cells_per_kg: str | None = None,
    total: str | None = None,
    weight: str | None = None,
    premedication: list[PremedicationGiven] | None = None,
) -> DoseFacts:
    return DoseFacts(
        dose_id=f"D-{number}",
        number=number,
        administered_at=at,
        administered_on=at.date(),
        cells_per_kg=Decimal(cells_per_kg) if cells_per_kg else None,
        total_cells=Decimal(total) if total else None,
        weight_kg=Decimal(weight) if weight else None,
        premedication=premedication,
    )


def kinds(findings: list) -> list[tuple[str, bool]]:  # type: ignore[type-arg]
    return [(f.kind, f.pages) for f in findings]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ("2000000", []),
        ("2200000", []),  # +10 % is inside
        ("1800000", []),
        ("2200001", [("dose_out_of_tolerance", True)]),  # an overdose pages
        ("1799999", [("dose_out_of_tolerance", False)]),  # an under-dose is mailed
    ],
)
def test_cells_per_kg_tolerance(protocol: Protocol, dosing: DosingRules, cells: str, expected: list) -> None:  # type: ignore[type-arg]
    arm = protocol.arm("A")
    assert arm is not None
    assert kinds(check_dose(dosing, arm, facts(cells_per_kg=cells), others=[])) == expected


def test_cells_per_kg_is_computed_from_total_cells_and_weight(protocol: Protocol, dosing: DosingRules) -> None:
    arm = protocol.arm("A")
    assert arm is not None
    assert check_dose(dosing, arm, facts(total="1.4e8", weight="70"), others=[]) == []
    over = check_dose(dosing, arm, facts(total="1.4e8", weight="50", cells_per_kg="2000000"), others=[])
    assert kinds(over) == [("dose_out_of_tolerance", True)]
    assert "computed from" in over[0].detail


def test_a_second_infusion_in_arm_a_is_an_extra_infusion(protocol: Protocol, dosing: DosingRules) -> None:
    arm = protocol.arm("A")
    assert arm is not None
    first = GivenDose("D-1", AT, AT.date())
    second = facts(number=2, at=AT + timedelta(days=7))
    assert kinds(check_dose(dosing, arm, second, others=[first])) == [("extra_infusion", True)]
    arm_b = protocol.arm("B")
    assert arm_b is not None
    assert check_dose(dosing, arm_b, second, others=[first]) == []


@pytest.mark.parametrize(("days", "ok"), [(5, True), (9, True), (4, False), (10, False)])
def test_weekly_interval_window(protocol: Protocol, dosing: DosingRules, days: int, ok: bool) -> None:
    arm = protocol.arm("C")
    assert arm is not None
    first = GivenDose("D-1", AT, AT.date())
    found = check_dose(dosing, arm, facts(number=2, at=AT + timedelta(days=days)), others=[first])
    assert kinds(found) == ([] if ok else [("interval_out_of_window", False)])


def test_premedication_checked_only_where_recorded(protocol: Protocol, dosing: DosingRules) -> None:
    arm = protocol.arm("A")
    assert arm is not None

    def premed(drug: str = "Dexamethasone", mg: str = "5", minutes: int = 30) -> list[PremedicationGiven]:
        return [PremedicationGiven(drug=drug, dose_mg=Decimal(mg), given_at=AT - timedelta(minutes=minutes))]

    assert check_dose(dosing, arm, facts(premedication=None), others=[]) == []  # not recorded
    assert check_dose(dosing, arm, facts(premedication=premed()), others=[]) == []
    assert check_dose(dosing, arm, facts(premedication=premed(minutes=45)), others=[]) == []
    for wrong in (premed(minutes=46), premed(mg="10"), premed(drug="paracetamol"), []):
        assert kinds(check_dose(dosing, arm, facts(premedication=wrong), others=[])) == [
            ("premedication_not_as_planned", False)
        ]


PASSED = {"sterility": True, "pathogens": True, "purity": True, "tumorigenicity": True}


@pytest.mark.parametrize(("viability", "kind"), [("85", None), ("84.9", "lot_release_failed"), ("99", None)])
def test_viability_boundary(release: ProductReleaseRules, viability: str, kind: str | None) -> None:
    result = check_release(
        release, dose_id="D-1", lot="L-7", release=ProductRelease(viability_percent=Decimal(viability), **PASSED)
    )
    assert (result.kind if result else None) == kind


def test_a_failed_or_missing_test_is_a_deviation(release: ProductReleaseRules) -> None:
    failed = check_release(
        release,
        dose_id="D-1",
        lot="L-7",
        release=ProductRelease(viability_percent=Decimal(90), **{**PASSED, "sterility": False}),
    )
    assert failed is not None and failed.kind == "lot_release_failed" and "sterility failed" in failed.detail
    partial = {k: v for k, v in PASSED.items() if k != "tumorigenicity"}
    missing = check_release(
        release, dose_id="D-1", lot="L-7", release=ProductRelease(viability_percent=Decimal(90), **partial)
    )
    assert missing is not None and missing.kind == "lot_not_released" and "tumorigenicity" in missing.detail
    refused = check_release(
        release,
        dose_id="D-1",
        lot="L-7",
        release=ProductRelease(released=False, viability_percent=Decimal(90), **PASSED),
    )
    assert refused is not None and refused.kind == "lot_release_failed"


def test_a_named_lot_without_release_pages_and_a_dose_without_product_data_is_not_judged(
    release: ProductReleaseRules,
) -> None:
    named = check_release(release, dose_id="D-1", lot="L-7", release=None)
    assert named is not None and named.kind == "lot_not_released"
    assert check_release(release, dose_id="D-1", lot=None, release=None) is None
    strict = release.model_copy(update={"release_required_on_every_dose": True})
    unnamed = check_release(strict, dose_id="D-1", lot=None, release=None)
    assert unnamed is not None and unnamed.kind == "lot_not_released"


def test_an_earlier_infusion_arriving_late_is_judged_against_the_next_one(
    protocol: Protocol, dosing: DosingRules
) -> None:
    arm = protocol.arm("C")
    assert arm is not None
    second = GivenDose("D-2", AT + timedelta(days=11), (AT + timedelta(days=11)).date())
    found = check_dose(dosing, arm, facts(number=1), others=[second])
    assert kinds(found) == [("interval_out_of_window", False)]
    assert "infusion 2" in found[0].detail and "11 days" in found[0].detail
