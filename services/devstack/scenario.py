"""A short sample scenario of a trial, posted through the signed webhook like an EDC would.

Used by `sentinel demo` and by the end-to-end tests; times are relative to `now` so that the SAE
deadline it shows is a real one.
"""

from __future__ import annotations

import json
import secrets
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
    """Enrolment into arm A, one infusion, baseline and day-2 labs, an AE that becomes serious."""
    day0 = now - timedelta(days=2)

    def event(event_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"id": event_id, "type": kind, "study": trial_id, "site": site, "subject": subject, "data": data}

    return [
        event(
            f"{subject}-enrol",
            "enrollment",
            {
                "arm": "A",
                "enrolled_at": (day0 - timedelta(days=1)).date().isoformat(),
                "weight_kg": 71.5,
                "car_t_infused_on": (day0 - timedelta(days=40)).date().isoformat(),
            },
        ),
        event(
            f"{subject}-lab-anc-base",
            "lab",
            {
                "result_id": "L-1",
                "test": "NEUT",
                "value": 0.42,
                "unit": "10^9/L",
                "lln": 1.8,
                "uln": 7.5,
                "collected_at": (day0 - timedelta(days=1)).isoformat(),
                "baseline": True,
            },
        ),
        event(
            f"{subject}-lab-plat-base",
            "lab",
            {
                "result_id": "L-2",
                "test": "PLAT",
                "value": 24,
                "unit": "10^9/L",
                "lln": 150,
                "uln": 400,
                "collected_at": (day0 - timedelta(days=1)).isoformat(),
                "baseline": True,
            },
        ),
        event(
            f"{subject}-dose-1",
            "dose",
            {
                "dose_id": "D-1",
                "number": 1,
                "administered_at": day0.isoformat(),
                "cells_per_kg": 2000000,
            },
        ),
        event(
            f"{subject}-ae-1-v1",
            "ae",
            {
                "ae_id": "AE-1",
                "version": 1,
                "term": "Fever and rigors after infusion",
                "ctcae_term": "Infusion related reaction",
                "meddra_code": "10051792",
                "grade": 2,
                "serious": False,
                "relatedness": "probable",
                "onset": day0.date().isoformat(),
            },
        ),
        event(
            f"{subject}-lab-anc-d2",
            "lab",
            {
                "result_id": "L-3",
                "test": "NEUT",
                "value": "<0.1",
                "unit": "10^9/L",
                "lln": 1.8,
                "uln": 7.5,
                "collected_at": (now - timedelta(hours=6)).isoformat(),
            },
        ),
        event(
            f"{subject}-ae-1-v2",
            "ae",
            {
                "ae_id": "AE-1",
                "version": 2,
                "term": "Fever and rigors after infusion, hypotension",
                "ctcae_term": "Infusion related reaction",
                "meddra_code": "10051792",
                "grade": 3,
                "serious": True,
                "seriousness": {"hospitalization": True},
                "relatedness": "probable",
                "onset": day0.date().isoformat(),
                "awareness_at": (now - timedelta(hours=1)).isoformat(),
            },
        ),
    ]


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
