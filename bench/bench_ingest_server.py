"""The two servers the ingest benchmark compares, run under identical uvicorn settings in their own process.

`python -m bench.bench_ingest_server ingest PORT`: the real ingest app, configured from SENTINEL_* variables.
`python -m bench.bench_ingest_server bare PORT`: FastAPI + uvicorn doing the least a webhook receiver can do
with the same body (read it, parse it as JSON with exact decimals, answer 202 with the ids): the baseline.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/sources/{source_id}/events", status_code=202)
    async def events(source_id: str, request: Request) -> JSONResponse:
        document: Any = json.loads(await request.body(), parse_float=Decimal)
        items = document["events"] if isinstance(document, dict) and "events" in document else [document]
        return JSONResponse({"accepted": [item["id"] for item in items]}, status_code=202)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return JSONResponse({"ready": True})

    return app


def ingest_app() -> FastAPI:
    from services.ingest.main import create_app
    from services.ingest.settings import IngestSettings

    return create_app(IngestSettings())


def serve(app: FastAPI, port: int) -> None:
    """The settings `services/runner.py` uses for the real services (uvicorn picks uvloop/httptools if present),
    and its JSON logs, so ingest's own log lines cost what they cost in production; no access log in either."""
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False, log_config=None)


if __name__ == "__main__":
    from shared.logs import configure_logging
    from shared.memory import trim_threshold, tune_allocator, tune_gc

    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "ingest":  # the allocator's tuning, as `sentinel run ingest` applies it at start
        tune_allocator(trim_threshold=trim_threshold("ingest"))
    configure_logging("info")
    app = bare_app() if kind == "bare" else ingest_app()
    if kind == "ingest":  # and the collector's
        tune_gc()
    serve(app, port)
