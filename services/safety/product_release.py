"""Pure: was the dose given from a released lot? Viability and every required release test, as the dose carries them.

A dose with no release results, a failed test, a viability below the minimum or a release decision of "no" is a
deviation that pages at once: the product is already in the subject, and infection or a poor product must be
watched for from now. A test not reported counts as not released (release needs evidence, not silence).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from shared.events import ProductRelease
from shared.protocol import ProductReleaseRules

LOT_NOT_RELEASED = "lot_not_released"
LOT_RELEASE_FAILED = "lot_release_failed"


@dataclass(frozen=True, slots=True)
class ReleaseFinding:
    kind: str
    detail: str


def check_release(
    rules: ProductReleaseRules, *, dose_id: str, lot: str | None, release: ProductRelease | None
) -> ReleaseFinding | None:
    named = f"lot {lot}" if lot else "an unnamed lot"
    if release is None and lot is None and not rules.release_required_on_every_dose:
        return None  # the sender records no product data for this dose: nothing to judge
    if release is None:
        return ReleaseFinding(LOT_NOT_RELEASED, f"dose {dose_id} from {named}: no release results on record")
    failed: list[str] = []
    absent: list[str] = []
    if release.released is False:
        failed.append("release refused")
    viability: Decimal | None = release.viability_percent
    if viability is None:
        absent.append("viability")
    elif viability < rules.min_viability_percent:
        failed.append(f"viability {viability}% < {rules.min_viability_percent}%")
    for test in rules.required_tests:
        result: bool | None = getattr(release, test)
        if result is None:
            absent.append(test)
        elif not result:
            failed.append(f"{test} failed")
    if failed:
        more = f"; not reported: {', '.join(absent)}" if absent else ""
        return ReleaseFinding(LOT_RELEASE_FAILED, f"dose {dose_id} from {named}: {', '.join(failed)}{more}")
    if absent:
        return ReleaseFinding(
            LOT_NOT_RELEASED, f"dose {dose_id} from {named}: release results missing: {', '.join(absent)}"
        )
    return None
