"""Schemathesis against ingest's OpenAPI document (ASGI app, fake publisher): every endpoint, generated bodies,
no 5xx. Every source authenticates with a bearer token, so generated bodies reach the parsers."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error

from services.ingest import openapi_docs as docs
from services.ingest.main import create_app
from services.ingest.settings import IngestSettings
from shared.clock import SystemClock

pytestmark = pytest.mark.integration
TOKEN = "schemathesis-token-0123456789"
TRIAL = "NCT07212335"
SOURCE_FOR_PATH = {
    "/v1/sources/{source_id}/events": "canonical",
    "/v1/sources/{source_id}/fhir": "fhir",
    "/v1/sources/{source_id}/odm": "odm",
    "/v1/sources/{source_id}/sdtm": "sdtm",
    "/v1/sources/{source_id}/redcap-det": "redcap",
}
AE_FORM = {"type": "ae", "items": {"AE.AETERM": "term", "AE.AESTDTC": "onset", "AE.AESER": "serious"}}

schemathesis.openapi.media_type(
    "application/xml",
    st.sampled_from([docs.ODM_EXAMPLE.encode(), b"<ODM/>", b"<x>"]) | st.binary(max_size=200),
    aliases=["text/xml"],
)
schemathesis.openapi.media_type("text/csv", st.sampled_from([docs.SDTM_CSV_EXAMPLE.encode()]) | st.binary(max_size=200))


class NullPublisher:
    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        return None


def _sources() -> dict[str, Any]:
    auth = {"scheme": "bearer", "secret": TOKEN}
    return {
        "sources": {
            "canonical": {"kind": "canonical", "auth": auth},
            "fhir": {"kind": "fhir", "trial": TRIAL, "auth": auth},
            "odm": {"kind": "odm", "trial": TRIAL, "auth": auth, "mapping": {"forms": {"AE": AE_FORM}}},
            "sdtm": {"kind": "sdtm", "trial": TRIAL, "auth": auth},
            "redcap": {
                "kind": "redcap",
                "trial": TRIAL,
                "auth": auth,
                "redcap": {"base_url": "http://127.0.0.1:9/", "project_id": "42", "token": "t" * 32},
                "mapping": {"forms": {"adverse_events": {"type": "ae", "items": {"aeterm": "term"}}}},
            },
        }
    }


def _app() -> Any:
    """Built at import: schemathesis's lazy fixture loader does not run on this pytest, its eager one does."""
    folder = Path(tempfile.mkdtemp(prefix="ingest-openapi-"))
    (folder / "sources.yaml").write_text(yaml.safe_dump(_sources()))
    config = IngestSettings(
        sources_path=folder / "sources.yaml", var_dir=folder, background_jobs=False, clinical_topic="openapi.clinical"
    )
    return create_app(config, publisher=NullPublisher(), clock=SystemClock(), registry=CollectorRegistry(), env={})


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


def test_every_operation_has_examples() -> None:
    document = schema.raw_schema
    for path in SOURCE_FOR_PATH:
        operation = document["paths"][path]["post"]
        for media in operation["requestBody"]["content"].values():
            assert media.get("examples") or media.get("example"), path
        for status in ("202", "401", "422", "503"):
            assert status in operation["responses"], (path, status)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any) -> None:
    case.path_parameters = {"source_id": SOURCE_FOR_PATH[case.operation.path]}
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(checks=[not_a_server_error])
