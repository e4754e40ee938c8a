"""A short sample scenario of a trial, posted through the signed webhook like an EDC would.

Used by `sentinel demo` and by the end-to-end tests; times are relative to `now` so that the SAE
deadline it shows is a real one.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from shared.webhook_signatures import WebhookSecret, signature_headers


def new_webhook_secret() -> str:
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def scenario_events(
    trial_id: str, now: datetime, *, subject: str = "101-001", site: str = "101"
) -> list[dict[str, Any]]:
    """Enrolment into arm A, baseline labs and immunology sample, one infusion, day-2 labs, an AE that becomes serious.

    The day-2 neutrophils are grade 4 but so was the baseline: no page. ALT rises to grade 3 from a normal
    baseline: one lab toxicity alert. The AE's second version is serious: the SAE clock starts. Creatinine,
    sent without the lab's reference range, quadruples from its baseline: "at least grade 3" (only a ULN
    could make it grade 4), a floor grade that pages with its review clock.
    """
    day0 = now - timedelta(days=2)
    before = (day0 - timedelta(days=1)).isoformat()
    day2 = (now - timedelta(hours=6)).isoformat()

    event = subject_event(trial_id, site, subject)

    def lab(
        suffix: str,
        result_id: str,
        test: str,
        value: object,
        unit: str,
        lln: object,
        uln: object,
        at: str,
        baseline: bool = False,
    ) -> dict[str, Any]:
        return event(
            suffix,
            "lab",
            {
                "result_id": result_id,
                "test": test,
                "value": value,
                "unit": unit,
                "lln": lln,
                "uln": uln,
                "collected_at": at,
                "baseline": baseline,
            },
        )

    infusion_reaction = {
        "ae_id": "AE-1",
        "ctcae_term": "Infusion related reaction",
        "meddra_code": "10051792",
        "relatedness": "probable",
        "onset": day0.date().isoformat(),
    }
    return [
        enrolment(event, day0, weight_kg=71.5, car_t_days_before=40),
        lab("lab-anc-base", "L-1", "NEUT", 0.42, "10^9/L", 1.8, 7.5, before, baseline=True),
        lab("lab-plat-base", "L-2", "PLAT", 24, "10^9/L", 150, 400, before, baseline=True),
        lab("lab-alt-base", "L-4", "ALT", 31, "U/L", 7, 40, before, baseline=True),
        *screening_labs(event, day0, anc=None),  # the baseline ANC of 0.42 is the qualifying count
        event("sample-baseline", "sample", {"sample_id": "IMM-0", "kind": "immunology", "collected_at": before}),
        first_dose(event, day0),
        event(
            "ae-1-v1",
            "ae",
            {
                **infusion_reaction,
                "version": 1,
                "term": "Fever and rigors after infusion",
                "grade": 2,
                "serious": False,
            },
        ),
        lab("lab-anc-d2", "L-3", "NEUT", "<0.1", "10^9/L", 1.8, 7.5, day2),
        lab("lab-alt-d2", "L-5", "ALT", 262, "U/L", 7, 40, day2),
        lab("lab-creat-base", "L-6", "CREAT", 0.8, "mg/dL", None, None, before, baseline=True),
        lab("lab-creat-d2", "L-7", "CREAT", 3.2, "mg/dL", None, None, day2),
        event(
            "ae-1-v2",
            "ae",
            {
                **infusion_reaction,
                "version": 2,
                "term": "Fever and rigors after infusion, hypotension",
                "grade": 3,
                "serious": True,
                "seriousness": {"hospitalization": True},
                "awareness_at": (now - timedelta(hours=1)).isoformat(),
            },
        ),
    ]


def held_arm_events(trial_id: str, now: datetime, *, subject: str, site: str = "101") -> list[dict[str, Any]]:
    """A second subject of arm A with a grade 3 pneumonitis, possibly related, on day 3 of the window.

    With the first subject's suspected DLT that makes two suspected DLTs: the stopping rule is reached if they
    are confirmed, so the arm is on `hold` until the officer has reviewed them (never `escalate`).
    """
    day0 = now - timedelta(days=3)

    event = subject_event(trial_id, site, subject)

    return [
        enrolment(event, day0, car_t_days_before=35),
        *screening_labs(event, day0),
        event(
            "sample-baseline",
            "sample",
            {"sample_id": "IMM-0", "kind": "immunology", "collected_at": (day0 - timedelta(hours=2)).isoformat()},
        ),
        first_dose(event, day0),
        event(
            "ae-1-v1",
            "ae",
            {
                "ae_id": "AE-1",
                "version": 1,
                "term": "Pneumonitis",
                "meddra_code": "10035742",
                "grade": 3,
                "serious": False,
                "relatedness": "possible",
                "onset": (day0 + timedelta(days=2)).date().isoformat(),
            },
        ),
    ]


NO_HISTORY_EXCLUSION = [
    {"code": "anti_tumour_therapy", "answer": False},
    {"code": "live_vaccine", "answer": False},
    {"code": "severe_infection", "answer": False},
]


EventMaker = Callable[[str, str, dict[str, Any]], dict[str, Any]]


def subject_event(trial_id: str, site: str, subject: str) -> EventMaker:
    """The EDC event builder for one subject: `event(suffix, kind, data)`, its id the subject plus `suffix`."""

    def event(suffix: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"{subject}-{suffix}",
            "type": kind,
            "study": trial_id,
            "site": site,
            "subject": subject,
            "data": data,
        }

    return event


def enrolment(
    event: EventMaker,
    day0: datetime,
    *,
    car_t_days_before: int,
    enrolled_days_before: int = 1,
    weight_kg: float | None = None,
) -> dict[str, Any]:
    """Enrolment into arm A before the first infusion on `day0`, with a prior CAR-T and no history exclusion."""
    return event(
        "enrol",
        "enrollment",
        {
            "arm": "A",
            "enrolled_at": (day0 - timedelta(days=enrolled_days_before)).date().isoformat(),
            **({"weight_kg": weight_kg} if weight_kg is not None else {}),
            "car_t_infused_on": (day0 - timedelta(days=car_t_days_before)).date().isoformat(),
            "history": NO_HISTORY_EXCLUSION,
        },
    )


def first_dose(event: EventMaker, day0: datetime) -> dict[str, Any]:
    """The first infusion (dose D-1, 2 x 10^6 cells/kg) on `day0`."""
    return event(
        "dose-1",
        "dose",
        {"dose_id": "D-1", "number": 1, "administered_at": day0.isoformat(), "cells_per_kg": 2000000},
    )


def screening_labs(
    event: EventMaker,
    day0: datetime,
    *,
    alt: int = 30,
    anc: str | None = "0.6",
) -> list[dict[str, Any]]:
    """The screening panel the eligibility rules read, 20 h before the first infusion: the subject's baseline.

    `anc` (cytopenic at 0.6) is left out where the subject's own baseline count already shows the cytopenia.
    """
    at = (day0 - timedelta(hours=20)).isoformat()
    panel = [
        *([("NEUT", anc, "10^9/L", "7.5")] if anc is not None else []),
        ("CREAT", "0.8", "mg/dL", "1.2"),
        ("ALT", str(alt), "U/L", "40"),
        ("AST", "28", "U/L", "40"),
        ("BILI", "0.6", "mg/dL", "1.2"),
        ("QTCF", "431", "ms", None),
        ("HBA1C", "5.6", "%", None),
    ]
    return [
        event(
            f"screen-{test.lower()}",
            "lab",
            {
                "result_id": f"SCR-{test}",
                "test": test,
                "value": value,
                "unit": unit,
                "uln": uln,
                "collected_at": at,
                "baseline": True,
            },
        )
        for test, value, unit, uln in panel
    ]


def ineligible_subject_events(trial_id: str, now: datetime, *, subject: str, site: str = "102") -> list[dict[str, Any]]:
    """A subject dosed although screening ALT was 3.75 x ULN (exclusion 4): a deviation paged to the officer and PI."""
    day0 = now - timedelta(days=1)

    event = subject_event(trial_id, site, subject)

    return [
        enrolment(event, day0, car_t_days_before=30),
        *screening_labs(event, day0, alt=150),
        first_dose(event, day0),
    ]


def unreleased_lot_dose(trial_id: str, now: datetime, *, subject: str, site: str = "101") -> dict[str, Any]:
    """A dose from lot UC-0042 whose viability was 84.9 %: below the 85 % release limit."""
    return {
        "id": f"{subject}-dose-lot",
        "type": "dose",
        "study": trial_id,
        "site": site,
        "subject": subject,
        "data": {
            "dose_id": "D-1",
            "number": 1,
            "administered_at": (now - timedelta(hours=2)).isoformat(),
            "cells_per_kg": 2000000,
            "lot": "UC-0042",
            "release": {
                "viability_percent": 84.9,
                "sterility": True,
                "pathogens": True,
                "purity": True,
                "tumorigenicity": True,
            },
        },
    }


@dataclass(frozen=True)
class Posted:
    event_id: str
    status: int
    body: dict[str, Any]


def post_signed(
    client: httpx.Client, base_url: str, source_id: str, secret: str, payload: dict[str, Any], *, now: datetime
) -> Posted:
    body = json.dumps(payload).encode()
    msg_id = "msg_" + secrets.token_hex(8)
    headers = signature_headers(WebhookSecret.parse(secret), msg_id, int(now.timestamp()), body)
    headers["content-type"] = "application/json"
    response = client.post(f"{base_url}/v1/sources/{source_id}/events", content=body, headers=headers)
    return Posted(str(payload.get("id")), response.status_code, response.json())


def response_events(
    trial_id: str, now: datetime, *, subject: str, site: str = "101", lose_it: bool = False
) -> list[dict[str, Any]]:
    """A subject of arm A whose counts recover: a complete response (CR) by week 4, and, with `lose_it`, a red-cell
    transfusion six hours ago that ends it (the "response lost" alert).

    Infused 30 days ago (day 0). Severe cytopenia at baseline (ANC 0.4, platelets 18, Hb 65 g/L); a platelet
    transfusion on day 10; counts on days 7, 14 and 18 short of a response; on day 20 every lineage at CR level,
    ten days after the transfusion, confirmed by the day-22 count (48 h later): CR from day 20. Immunology
    samples at baseline and week 1.
    """
    day0 = now - timedelta(days=30)

    def at(day: float) -> str:
        return (day0 + timedelta(days=day)).isoformat()

    event = subject_event(trial_id, site, subject)

    def count(day: float, anc: str, plt: str, hgb: str, baseline: bool = False) -> list[dict[str, Any]]:
        tests = (
            ("NEUT", anc, "10^9/L", "1.8", "7.5"),
            ("PLAT", plt, "10^9/L", "150", "400"),
            ("HGB", hgb, "g/L", "120", "160"),
        )
        return [
            event(
                f"cbc-d{day:g}-{test.lower()}",
                "lab",
                {
                    "result_id": f"CBC-D{day:g}-{test}",
                    "test": test,
                    "value": value,
                    "unit": unit,
                    "lln": lln,
                    "uln": uln,
                    "collected_at": at(day),
                    "baseline": baseline,
                },
            )
            for test, value, unit, lln, uln in tests
        ]

    events = [
        enrolment(event, day0, enrolled_days_before=3, weight_kg=68, car_t_days_before=35),
        *count(-2, "0.4", "18", "65", baseline=True),
        *screening_labs(event, datetime.fromisoformat(at(0)), anc=None),  # the baseline ANC 0.4 qualifies
        event("sample-baseline", "sample", {"sample_id": "IMM-0", "kind": "immunology", "collected_at": at(-1)}),
        first_dose(event, day0),
        *count(7, "0.5", "15", "70"),
        event("sample-week-1", "sample", {"sample_id": "IMM-1", "kind": "immunology", "collected_at": at(7)}),
        event(
            "transfusion-plt-1",
            "transfusion",
            {"transfusion_id": "TX-1", "product": "platelets", "administered_at": at(10), "units": 1},
        ),
        *count(14, "0.9", "32", "78"),
        *count(18, "1.2", "45", "85"),
        *count(20, "1.8", "110", "105"),
        *count(22, "2.1", "125", "108"),
        *count(27, "2.4", "140", "112"),
    ]
    if lose_it:
        events.append(
            event(
                "transfusion-rbc-2",
                "transfusion",
                {
                    "transfusion_id": "TX-2",
                    "product": "red_cells",
                    "administered_at": (now - timedelta(hours=6)).isoformat(),
                    "units": 2,
                },
            )
        )
    return events
