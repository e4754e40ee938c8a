"""The console's pages and forms. Pages read notify's and safety's APIs with the signed-in user's token; forms
post here and are passed on to the same API endpoints (never a second way to change state), then redirect back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console import listings, plots, presenting
from services.console.api_client import ApiProblem, OfficerApi
from services.console.runtime import ConsoleRuntime
from services.console.sessions import ConsoleSession
from services.console.signin import (
    FLASH_COOKIE,
    ROLE_RANK,
    Refused,
    Runtime,
    Signed,
    checked_form,
    flash,
    keep_session,
    require_role,
    safe_next,
    take_flash,
)

router = APIRouter(prefix="/console")
T = TypeVar("T")
INBOX_REFRESH_SECONDS = 60
"""The open inbox reloads itself (unless the officer is typing), so a new SAE shows up without a click."""
SNOOZE_CHOICES = [("0.5", "30 minutes"), ("1", "1 hour"), ("2", "2 hours"), ("4", "4 hours"), ("8", "8 hours")]


def api(runtime: ConsoleRuntime, token: str) -> OfficerApi:
    return OfficerApi(runtime.client, runtime.settings.notify_api_url, runtime.settings.safety_api_url, token)


async def gather_limited(calls: list[Awaitable[T]], limit: int = 8) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


def page(
    request: Request,
    runtime: ConsoleRuntime,
    session: ConsoleSession,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
) -> HTMLResponse:
    now = runtime.clock.now()
    response = runtime.templates.TemplateResponse(
        request,
        template,
        {
            **context,
            "session": session,
            "can_act": ROLE_RANK[session.role] >= ROLE_RANK["officer"],
            "trial": runtime.protocol.trial_id,
            "now": now,
            "now_iso": now.isoformat(),
            "flash": take_flash(request, runtime),
        },
        status_code=status,
    )
    keep_session(response, request, runtime, session)
    response.delete_cookie(FLASH_COOKIE, path="/console")
    return response


def problem_page(request: Request, runtime: ConsoleRuntime, session: ConsoleSession, exc: ApiProblem) -> HTMLResponse:
    return page(
        request, runtime, session, "error.html", {"problem": exc}, status=exc.status if 400 <= exc.status < 600 else 502
    )


def back(
    request: Request, runtime: ConsoleRuntime, session: ConsoleSession, target: str, kind: str, text: str
) -> Response:
    response = RedirectResponse(safe_next(target), status_code=303)
    keep_session(response, request, runtime, session)
    flash(response, request, runtime, kind, text)
    return response


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def home() -> Response:
    return RedirectResponse("/console/inbox", status_code=303)


# ----------------------------------------------------------------------------------------------- inbox, alerts


@router.get("/inbox", response_class=HTMLResponse)
async def inbox(request: Request, runtime: Runtime, signed: Signed) -> Response:
    session, token = signed
    officer = api(runtime, token)
    trial = runtime.protocol.trial_id
    try:
        listed = []
        for state in ("open", "acknowledged"):
            listed += await officer.notify("GET", "/alerts", params={"trial": trial, "state": state, "limit": 500})
        alerts = await gather_limited([officer.notify("GET", f"/alerts/{a['id']}") for a in listed])
    except ApiProblem as exc:
        return problem_page(request, runtime, session, exc)
    timed, informational = presenting.inbox(alerts, runtime.clock.now())
    context = {"timed": timed, "informational": informational, "refresh": INBOX_REFRESH_SECONDS}
    return page(request, runtime, session, "inbox.html", context)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
async def alert_page(alert_id: str, request: Request, runtime: Runtime, signed: Signed) -> Response:
    session, token = signed
    try:
        alert = await api(runtime, token).notify("GET", f"/alerts/{alert_id}")
    except ApiProblem as exc:
        return problem_page(request, runtime, session, exc)
    now = runtime.clock.now()
    timed, informational = presenting.inbox([alert], now)
    item = (timed or informational or [presenting.InboxItem(alert, [], {}, None, alert.get("deliveries", []))])[0]
    return page(
        request,
        runtime,
        session,
        "alert.html",
        {
            "alert": alert,
            "item": item,
            "snooze_choices": SNOOZE_CHOICES,
            "details": presenting.detail_rows(alert.get("details", {})),
        },
    )


async def _act(
    request: Request,
    runtime: ConsoleRuntime,
    signed: tuple[ConsoleSession, str],
    call: str,
    body: dict[str, Any],
    *,
    service: str,
    done: str,
    target: str,
) -> Response:
    session, token = signed
    officer = api(runtime, token)
    try:
        if service == "notify":
            await officer.notify("POST", call, body=body)
        else:
            await officer.safety("POST", call, body=body)
    except ApiProblem as exc:
        return back(request, runtime, session, target, "error", f"Not done: {exc.title}. {exc.detail}")
    return back(request, runtime, session, target, "ok", done)


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


@router.post("/alerts/{alert_id}/ack")
async def acknowledge(alert_id: str, request: Request, runtime: Runtime, signed: Signed) -> Response:
    form = await checked_form(request, runtime, signed[0])
    require_role(signed[0], "officer")
    comment = _text(form, "comment") or None
    target = safe_next(form.get("back") or f"/console/alerts/{alert_id}")
    return await _act(
        request, runtime, signed, f"/alerts/{alert_id}/ack", {"comment": comment},
        service="notify", done="Acknowledged: paging stopped. Open obligations keep their clocks.", target=target,
    )  # fmt: skip


@router.post("/alerts/{alert_id}/comment")
async def comment(alert_id: str, request: Request, runtime: Runtime, signed: Signed) -> Response:
    form = await checked_form(request, runtime, signed[0])
    require_role(signed[0], "officer")
    target = f"/console/alerts/{alert_id}"
    return await _act(
        request, runtime, signed, f"/alerts/{alert_id}/comments", {"text": _text(form, "text")},
        service="notify", done="Comment added to the alert's history.", target=target,
    )  # fmt: skip


@router.post("/alerts/{alert_id}/snooze")
async def snooze(alert_id: str, request: Request, runtime: Runtime, signed: Signed) -> Response:
    """Until = now + the chosen hours, or an explicit `until` (ISO 8601 with offset) from a script."""
    form = await checked_form(request, runtime, signed[0])
    require_role(signed[0], "officer")
    target = f"/console/alerts/{alert_id}"
    until = _text(form, "until")
    if not until:
        try:
            hours = float(_text(form, "hours") or "nan")
        except ValueError:
            hours = float("nan")
        if not 0 < hours <= 7 * 24:
            return back(request, runtime, signed[0], target, "error", "Not snoozed: choose how long (up to 7 days).")
        until = (runtime.clock.now() + timedelta(hours=hours)).isoformat()
    return await _act(
        request, runtime, signed, f"/alerts/{alert_id}/snooze", {"reason": _text(form, "reason"), "until": until},
        service="notify", done=f"Snoozed until {presenting.when(until)}: escalation pages wait; "
        "obligation reminders and overdue pages do not.", target=target,
    )  # fmt: skip


@router.post("/obligations/{obligation_id}/complete")
async def complete(obligation_id: str, request: Request, runtime: Runtime, signed: Signed) -> Response:
    form = await checked_form(request, runtime, signed[0])
    require_role(signed[0], "officer")
    target = safe_next(form.get("back"))
    body = {"reference": _text(form, "reference"), "comment": _text(form, "comment") or None}
    return await _act(
        request, runtime, signed, f"/obligations/{obligation_id}/complete", body,
        service="notify", done=f"Report recorded as '{body['reference']}': the obligation's clock stopped.",
        target=target,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------ DLTs


def _review_clocks(alerts: list[Mapping[str, Any]], now: datetime) -> dict[str, tuple[presenting.Clock, str]]:
    """dlt_id -> (the review clock of notify's open DLT review, its alert id)."""
    found: dict[str, tuple[presenting.Clock, str]] = {}
    for alert in alerts:
        dlt_id = alert.get("details", {}).get("dlt_id")
        if alert.get("kind") != "dlt" or not dlt_id:
            continue
        for obligation in alert.get("obligations", []):
            due = presenting.parse_time(obligation.get("due_at"))
            is_open = obligation.get("state") in presenting.OPEN_OBLIGATION_STATES
            if obligation.get("kind") == "dlt_review" and due is not None and (is_open or dlt_id not in found):
                found[str(dlt_id)] = (presenting.clock(due, now), str(alert["id"]))
    return found


async def _dlt_context(officer: OfficerApi, runtime: ConsoleRuntime, dlts: list[Mapping[str, Any]]) -> dict[str, Any]:
    trial = runtime.protocol.trial_id
    subject_ids = sorted({str(d["subject_id"]) for d in dlts})
    subjects = await gather_limited([officer.safety("GET", f"/trials/{trial}/subjects/{s}") for s in subject_ids])
    by_subject = dict(zip(subject_ids, subjects, strict=True))
    alerts = await officer.notify("GET", "/alerts", params={"trial": trial, "limit": 1000})
    now = runtime.clock.now()
    clocks = _review_clocks(alerts, now)
    hours = runtime.protocol.dlt.review_hours
    cards = []
    for dlt in dlts:
        subject = by_subject[str(dlt["subject_id"])]
        ae = next((a for a in subject.get("adverse_events", []) if a["ae_id"] == dlt["ae_id"]), None)
        versions = ae["versions"] if ae else []
        latest = versions[-1]["payload"] if versions else {}
        review = clocks.get(str(dlt["dlt_id"]))
        if review is None:
            suspected = presenting.parse_time(dlt["suspected_at"]) or now
            review = (presenting.clock(suspected + timedelta(hours=hours), now), "")
        criterion = next((c for c in runtime.protocol.dlt.criteria if c.name == dlt.get("criterion")), None)
        cards.append(
            {
                "dlt": dlt,
                "subject": subject,
                "versions": versions,
                "criterion": criterion.description if criterion else dlt.get("criterion") or "",
                "placement": presenting.onset_placement(
                    dlt,
                    latest.get("onset"),
                    window=subject.get("dlt_window"),
                    first_number=0 if runtime.protocol.study_days == "anchor_is_day_0" else 1,
                ),
                "labs": presenting.relevant_labs(subject, dlt),
                "clock": review[0],
                "alert_id": review[1],
            }
        )
    return {"cards": cards, "review_hours": hours}


@router.get("/dlts", response_class=HTMLResponse)
async def dlt_queue(request: Request, runtime: Runtime, signed: Signed) -> Response:
    session, token = signed
    officer = api(runtime, token)
    trial = runtime.protocol.trial_id
    try:
        dlts = await officer.safety("GET", f"/trials/{trial}/dlts")
        suspected = [d for d in dlts if d["state"] == "suspected"]
        context = await _dlt_context(officer, runtime, suspected)
    except ApiProblem as exc:
        return problem_page(request, runtime, session, exc)
    context["cards"].sort(key=lambda c: c["clock"].due_at)
    decided = sorted((d for d in dlts if d["state"] != "suspected"), key=lambda d: d["updated_at"], reverse=True)
    return page(request, runtime, session, "dlts.html", {**context, "decided": decided})


@router.get("/dlts/{dlt_id}", response_class=HTMLResponse)
async def dlt_page(dlt_id: str, request: Request, runtime: Runtime, signed: Signed) -> Response:
    session, token = signed
    officer = api(runtime, token)
    trial = runtime.protocol.trial_id
    try:
        dlts = await officer.safety("GET", f"/trials/{trial}/dlts")
        dlt = next((d for d in dlts if d["dlt_id"] == dlt_id), None)
        if dlt is None:
            raise ApiProblem(404, "Not found", f"no DLT '{dlt_id}' in trial {trial}")
        context = await _dlt_context(officer, runtime, [dlt])
        audit = await officer.safety("GET", f"/trials/{trial}/audit", params={"dlt": dlt_id})
    except ApiProblem as exc:
        return problem_page(request, runtime, session, exc)
    return page(request, runtime, session, "dlt.html", {"card": context["cards"][0], "audit": audit})


@router.post("/dlts/{dlt_id}/{decision}")
async def decide_dlt(dlt_id: str, decision: str, request: Request, runtime: Runtime, signed: Signed) -> Response:
    form = await checked_form(request, runtime, signed[0])
    require_role(signed[0], "officer")
    if decision not in ("confirm", "reject"):
        raise Refused(404, f"no DLT decision '{decision}'")
    body: dict[str, Any] = {"reason": _text(form, "reason")}
    if _text(form, "expected_state"):
        body["expected_state"] = _text(form, "expected_state")
    if _text(form, "expected_revision").isdigit():  # the page's revision of the DLT: a stale page is refused (409)
        body["expected_revision"] = int(_text(form, "expected_revision"))
    revised = body.get("expected_state") in ("confirmed", "rejected")  # the decision it reverses (safety checks)
    target = safe_next(form.get("back") or f"/console/dlts/{dlt_id}")
    return await _act(
        request, runtime, signed, f"/dlts/{dlt_id}/{decision}", body, service="safety",
        done=f"DLT {decision}ed{' (decision revised)' if revised else ''}; the cohort board reflects it.",
        target=target,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- cohorts, subjects


@router.get("/cohorts", response_class=HTMLResponse)
async def cohorts(request: Request, runtime: Runtime, signed: Signed) -> Response:
    session, token = signed
    officer = api(runtime, token)
    trial = runtime.protocol.trial_id
    try:
        arms, history, subjects = await asyncio.gather(
            officer.safety("GET", f"/trials/{trial}/cohorts"),
            officer.safety("GET", f"/trials/{trial}/audit", params={"cohorts": "true"}),
            officer.safety("GET", f"/trials/{trial}/subjects"),
        )
    except ApiProblem as exc:
        return problem_page(request, runtime, session, exc)
    labels = {a.id: a.label for a in runtime.protocol.arms}
    members: dict[str, list[Mapping[str, Any]]] = {}
    for subject in subjects:
        members.setdefault(str(subject.get("arm") or ""), []).append(subject)
    return page(
        request,
        runtime,
        session,
        "cohorts.html",
        {"arms": arms, "labels": labels, "history": list(reversed(history)), "members": members,
         "rules": runtime.protocol.cohort},
    )  # fmt: skip


@router.get("/subjects", response_class=HTMLResponse)
async def subjects(request: Request, runtime: Runtime, signed: Signed) -> Response:
    session, token = signed
    try:
        listed = await api(runtime, token).safety("GET", f"/trials/{runtime.protocol.trial_id}/subjects")
    except ApiProblem as exc:
        return problem_page(request, runtime, session, exc)
    return page(request, runtime, session, "subjects.html", {"subjects": listed})


@router.get("/subjects/{subject_id}", response_class=HTMLResponse)
async def subject_page(subject_id: str, request: Request, runtime: Runtime, signed: Signed) -> Response:
    session, token = signed
    officer = api(runtime, token)
    trial = runtime.protocol.trial_id
    base = f"/trials/{trial}/subjects/{subject_id}"
    try:
        subject, visits, series, audit, alerts = await asyncio.gather(
            officer.safety("GET", base),
            officer.safety("GET", f"{base}/visits"),
            officer.safety("GET", f"{base}/lab-series"),
            officer.safety("GET", f"/trials/{trial}/audit", params={"subject": subject_id}),
            officer.notify("GET", "/alerts", params={"trial": trial, "subject": subject_id, "limit": 500}),
        )
    except ApiProblem as exc:
        return problem_page(request, runtime, session, exc)
    now = runtime.clock.now()
    infusions = [t for d in subject["doses"] if (t := presenting.parse_time(d["administered_at"])) is not None]
    svgs = [
        (
            f"{plots.TITLES.get(s['name'], s['name'])} ({s['unit']})",
            plots.series_svg(s, window=subject.get("dlt_window"), infusions=infusions, now=now),
        )
        for s in series
    ]
    return page(
        request,
        runtime,
        session,
        "subject.html",
        {
            "subject": subject,
            "events": presenting.timeline(subject, visits),
            "visits": visits,
            "plots": svgs,
            "audit": audit,
            "alerts": alerts,
        },
    )


# ----------------------------------------------------------------------------------------------- listings


def _filters(request: Request) -> listings.Filters:
    query = request.query_params
    grade = query.get("min_grade", "")
    return listings.Filters(
        subject=query.get("subject", "").strip(),
        site=query.get("site", "").strip(),
        arm=query.get("arm", "").strip(),
        term=query.get("term", "").strip(),
        min_grade=int(grade) if grade.isdigit() and 1 <= int(grade) <= 5 else None,
        state=query.get("state", "").strip(),
    )


async def _listing_rows(officer: OfficerApi, trial: str, kind: str) -> list[Mapping[str, Any]]:
    if kind == "ae":
        rows: list[Mapping[str, Any]] = await officer.safety("GET", f"/trials/{trial}/adverse-events")
    elif kind == "sae":
        rows = await officer.safety("GET", f"/trials/{trial}/adverse-events", params={"serious": "true"})
    elif kind == "dlt":
        rows = await officer.safety("GET", f"/trials/{trial}/dlts")
    else:
        rows = await officer.safety("GET", f"/trials/{trial}/lab-toxicities", params={"min_grade": 1})
    return rows


@router.get("/listings", include_in_schema=False)
async def listings_home() -> Response:
    return RedirectResponse("/console/listings/ae", status_code=303)


@router.get("/listings/{kind}", response_class=HTMLResponse)
async def listing(kind: str, request: Request, runtime: Runtime, signed: Signed, format: str = "html") -> Response:
    session, token = signed
    if kind not in listings.KINDS:
        return problem_page(request, runtime, session, ApiProblem(404, "Not found", f"no listing '{kind}'"))
    trial = runtime.protocol.trial_id
    try:
        rows = await _listing_rows(api(runtime, token), trial, kind)
    except ApiProblem as exc:
        return problem_page(request, runtime, session, exc)
    filters = _filters(request)
    chosen = listings.select_rows(rows, filters)
    header, cells = listings.table(kind, chosen)  # type: ignore[arg-type]  # kind checked against KINDS above
    stamp = runtime.clock.now().strftime("%Y%m%dT%H%MZ")
    name = f"{trial}-{kind}-listing-{stamp}"
    if format in ("csv", "xlsx"):
        if format == "csv":
            data, media = listings.to_csv(header, cells), "text/csv; charset=utf-8"
        else:
            note = (
                f"{listings.KINDS[kind]}, trial {trial}, exported {presenting.when(runtime.clock.now())} by "
                f"{session.user}; filters: {filters}"
            )
            data = listings.to_xlsx(listings.KINDS[kind], header, cells, note=note)
            media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        response = Response(data, media_type=media)
        response.headers["content-disposition"] = f'attachment; filename="{name}.{format}"'
        keep_session(response, request, runtime, session)
        return response
    return page(
        request,
        runtime,
        session,
        "listing.html",
        {
            "kind": kind,
            "kinds": listings.KINDS,
            "header": header,
            "cells": cells,
            "rows": chosen,
            "total": len(rows),
            "filters": filters,
            "query": request.url.query,
        },
    )
