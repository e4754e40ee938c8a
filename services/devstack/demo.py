"""`sentinel demo`: everything on one machine, a sample scenario through the signed webhook, the results.

Starts (and afterwards stops) what it needs: the local broker, a mail catcher, the three services.
Each run uses a new subject id so the scenario is new to the services every time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx

from services.devstack import kafka_broker
from services.devstack.mail_catcher import MailCatcher
from services.devstack.scenario import (
    held_arm_events,
    ineligible_subject_events,
    new_webhook_secret,
    post_signed,
    response_events,
    scenario_events,
)
from shared.protocol import load_protocol

SOURCE = "demo-edc"
T = TypeVar("T")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _ports() -> dict[str, int]:
    return {
        "ingest": int(os.environ.get("SENTINEL_INGEST_PORT", "8000")),
        "safety": int(os.environ.get("SENTINEL_SAFETY_PORT", "8001")),
        "notify": int(os.environ.get("SENTINEL_NOTIFY_PORT", "8002")),
        "console": int(os.environ.get("SENTINEL_CONSOLE_PORT", "8003")),
    }


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the services exited ({process.returncode}); see var/log/services.log")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} was not ready after {timeout:.0f}s; see var/log/services.log")


def _print_mail(path: Path, message: EmailMessage) -> None:
    _say(f"  {BOLD}mail{RESET} to {message['To']}: {str(message['Subject']).strip()}  {DIM}[{path}]{RESET}")


def _settled(fetch: Callable[[], list[T]], *, deadline: float, ready: Callable[[list[T]], bool]) -> list[T]:
    """Poll until the result is ready and has not changed for a moment (more signals may still be on their way)."""
    last: list[T] = []
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        current = fetch()
        if len(current) != len(last):
            last, stable_since = current, time.monotonic()
        elif ready(current) and time.monotonic() - stable_since > 2.0:
            return current
        time.sleep(0.25)
    return last


def _show_lab(lab: dict[str, Any]) -> None:
    grade = "-" if lab["grade"] is None else f"{'>=' if lab.get('grade_floor') else ''}{lab['grade']}"
    tag = " (baseline)" if lab["baseline"] else ""
    result = f"{lab['test'] or lab['loinc']} {lab['value']} {lab['unit'] or ''}".strip()
    _say(f"  {result:<22} grade {grade}{tag:<11} {DIM}{lab['grade_reason']}{RESET}")


def _show_alert(alert: dict[str, Any]) -> None:
    details = alert["details"]
    kind = alert["kind"]
    if kind == "sae":
        _say(f"{BOLD}SAE detected{RESET}: {alert['title']}")
        criteria = ", ".join(details["criteria"])
        _say(f"  seriousness: {criteria}; grade {details['grade']}; AE version {details['ae_version']}")
    elif kind == "dlt":
        _say(f"{BOLD}suspected DLT{RESET}: {alert['title']}")
        _say(f"  {DIM}{details.get('reason', '')}{RESET}")
    elif kind == "susar":
        _say(f"{BOLD}SUSAR (expedited report){RESET}: {alert['title']}")
        _say(f"  {details.get('reason', '')}; day 0 {details.get('clock_start')} ({details.get('clock_basis')})")
    elif kind == "lab_toxicity":
        _say(f"{BOLD}lab toxicity{RESET}: {alert['title']} (baseline grade {details.get('baseline_grade')})")
    else:
        _say(f"{BOLD}{kind}{RESET}: {alert['title']}")
    for obligation in alert["obligations"]:
        left = obligation["seconds_left"]
        hours = f"{left / 3600:.1f} h left" if left is not None else obligation["state"]
        _say(
            f"  {obligation['description']}: clock started {obligation['clock_started_at']} "
            f"({obligation['clock_basis']}), {BOLD}due {obligation['due_at']}{RESET} ({hours})"
        )


def _show_cohorts(cohorts: list[dict[str, Any]]) -> None:
    for arm in cohorts:
        _say(
            f"  arm {arm['arm']}: enrolled {arm['enrolled']}, evaluable {arm['evaluable']}, DLTs confirmed "
            f"{arm['dlt_confirmed']} / suspected {arm['dlt_suspected']} -> {BOLD}{arm['decision']}{RESET}"
        )
        if arm["decision"] in ("hold", "awaiting_dlt_review", "stop", "recommend"):
            _say(f"    {DIM}{arm['reason']}{RESET}")


def _show_response(response: dict[str, Any]) -> None:
    labels = {"complete": "complete response (CR)", "partial": "partial response (PR)", "none": "no response"}
    current = response["current"]
    days = f", {current['duration_days']} days" if current["duration_days"] is not None else ""
    _say(f"  now: {BOLD}{labels[current['level']]}{RESET}{days}  {DIM}{current['reason']}{RESET}")
    for point in response["timepoints"]:
        days = f", {point['duration_days']} days" if point["duration_days"] is not None else ""
        _say(f"  at {point['name']} ({point['as_of']}): {BOLD}{labels[point['level']]}{RESET}{days}")
    for given in response["transfusions"]:
        _say(f"  {DIM}transfusion {given['transfusion_id']}: {given['product']} at {given['administered_at']}{RESET}")


def run_demo(*, keep_running: bool = True) -> int:
    var = Path(os.environ.get("SENTINEL_VAR_DIR", "var"))
    (var / "log").mkdir(parents=True, exist_ok=True)
    protocol = load_protocol(Path(p) if (p := os.environ.get("SENTINEL_PROTOCOL_PATH")) else None)
    ports = _ports()
    smtp_port = int(os.environ.get("SENTINEL_SMTP_PORT", "1025"))
    broker_cfg = kafka_broker.config_from_env()
    broker_was_running = kafka_broker.status(broker_cfg).answering

    _say(f"{BOLD}Safety Sentinel demo{RESET} — trial {protocol.trial_id}")
    _say("starting the local Kafka broker…")
    broker = kafka_broker.up(broker_cfg)
    _say(f"  {broker.message}")
    secret = new_webhook_secret()
    token = "demo-officer-" + os.urandom(12).hex()
    env = {
        **os.environ,
        "SENTINEL_KAFKA_BOOTSTRAP_SERVERS": broker_cfg.bootstrap,
        "SENTINEL_WEBHOOK_SECRETS": json.dumps({SOURCE: secret}),
        "SENTINEL_API_TOKENS": json.dumps({token: {"user": "demo.officer", "role": "officer"}}),
        "SENTINEL_SMTP_PORT": str(smtp_port),
        "SENTINEL_VAR_DIR": str(var),
        "SENTINEL_NOTIFY_API_URL": f"http://127.0.0.1:{ports['notify']}",
        "SENTINEL_SAFETY_API_URL": f"http://127.0.0.1:{ports['safety']}",
        "SENTINEL_CONSOLE_URL": os.environ.get("SENTINEL_CONSOLE_URL", f"http://127.0.0.1:{ports['console']}"),
    }
    services: subprocess.Popen[bytes] | None = None
    catcher = MailCatcher(var / "mail", port=smtp_port)
    try:
        catcher.start()
        _say(f"mail catcher on 127.0.0.1:{catcher.port}, saving to {var / 'mail'}")
        seen_before = set(catcher.paths())
        log = open(var / "log" / "services.log", "ab")  # noqa: SIM115 - owned by the child process
        services = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "all", "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        for name, port in ports.items():
            _wait_ready(f"http://127.0.0.1:{port}", services)
            _say(f"  {name} ready on http://127.0.0.1:{port}")

        now = datetime.now(UTC)
        subject = f"101-{int(now.timestamp()) % 1000:03d}"
        _say(f"\n{BOLD}posting the sample scenario for subject {subject} through the signed webhook{RESET}")
        ingest = f"http://127.0.0.1:{ports['ingest']}"
        with httpx.Client(timeout=20) as client:
            second = f"{subject}-b"
            events = [
                *scenario_events(protocol.trial_id, now, subject=subject),
                *held_arm_events(protocol.trial_id, now, subject=second),
            ]
            for event in events:
                posted = post_signed(client, ingest, SOURCE, secret, event, now=now)
                _say(f"  {event['type']:<10} {event['id']:<28} -> {posted.status} {json.dumps(posted.body)}")

            auth = {"authorization": f"Bearer {token}"}
            notify = f"http://127.0.0.1:{ports['notify']}"
            safety = f"http://127.0.0.1:{ports['safety']}"
            deadline = time.monotonic() + 60

            def subject_alerts() -> list[dict[str, Any]]:
                response = client.get(f"{notify}/v1/alerts", params={"subject": subject}, headers=auth)
                listed: list[dict[str, Any]] = response.json()
                return listed

            alerts = _settled(subject_alerts, deadline=deadline, ready=lambda a: any(x["kind"] == "sae" for x in a))
            trial = protocol.trial_id
            timeline = client.get(f"{safety}/v1/trials/{trial}/subjects/{subject}", headers=auth).json()
            _say(f"\n{BOLD}labs graded by CTCAE v5.0{RESET}")
            for lab in timeline.get("labs", []):
                _show_lab(lab)
            _say(f"\n{BOLD}alerts{RESET}")
            for alert in sorted(
                alerts,
                key=lambda a: (
                    ("sae", "dlt", "lab_toxicity").index(a["kind"])
                    if a["kind"] in ("sae", "dlt", "lab_toxicity")
                    else 9
                ),
            ):
                _show_alert(alert)
            if not any(a["kind"] == "sae" for a in alerts):
                _say("no SAE alert within 60 s; see var/log/services.log")
                return 1
            _say(f"\n{BOLD}3+3 cohorts{RESET} (a second subject of arm A, {second}, has a suspected DLT too)")

            def cohorts() -> list[dict[str, Any]]:
                listed: list[dict[str, Any]] = client.get(f"{safety}/v1/trials/{trial}/cohorts", headers=auth).json()
                return listed

            held = _settled(cohorts, deadline=time.monotonic() + 30, ready=lambda c: c[0]["dlt_suspected"] >= 2)
            _show_cohorts(held)
            ineligible = f"{subject}-c"
            _say(f"\n{BOLD}eligibility{RESET}: subject {ineligible} dosed although screening ALT was 3.75 x ULN")
            for event in ineligible_subject_events(trial, now, subject=ineligible):
                post_signed(client, ingest, SOURCE, secret, event, now=now)

            def deviations() -> list[dict[str, Any]]:
                response = client.get(f"{notify}/v1/alerts", params={"subject": ineligible}, headers=auth)
                return [a for a in response.json() if a["kind"] == "protocol_deviation"]

            for alert in _settled(deviations, deadline=time.monotonic() + 30, ready=bool):
                _say(f"{BOLD}protocol deviation{RESET}: {alert['title']}")
                _say(f"  {DIM}{alert['details'].get('detail', '')}{RESET}")

            responder = f"{subject}-r"
            _say(f"\n{BOLD}haematological response{RESET}: subject {responder}, infused 30 days ago, counts recovering")
            for event in response_events(trial, now, subject=responder):
                posted = post_signed(client, ingest, SOURCE, secret, event, now=now)
                if posted.status >= 300:
                    _say(f"  {event['type']:<10} {event['id']:<28} -> {posted.status} {json.dumps(posted.body)}")
            response_url = f"{safety}/v1/trials/{trial}/subjects/{responder}/response"

            def response_now() -> list[dict[str, Any]]:
                got = client.get(response_url, headers=auth)
                return [got.json()] if got.status_code == 200 and got.json()["current"]["level"] == "complete" else []

            shown = _settled(response_now, deadline=time.monotonic() + 30, ready=bool)
            if shown:
                _show_response(shown[0])
            else:
                _say("  no response computed within 30 s; see var/log/services.log")

            def subject_mails() -> list[tuple[Path, EmailMessage]]:
                messages = zip(catcher.paths(), catcher.messages(), strict=True)
                return [(p, m) for p, m in messages if p not in seen_before and subject in str(m["Subject"])]

            mails = _settled(subject_mails, deadline=time.monotonic() + 30, ready=bool)
            _say(f"\n{BOLD}mails sent{RESET}")
            for path, message in mails:
                _print_mail(path, message)
            sae_mail = next((m for _, m in mails if "SAE" in str(m["Subject"])), None)
            body = sae_mail.get_body(preferencelist=("plain",)) if sae_mail else None
            if body is not None:
                _say(f"\n{DIM}{body.get_content().rstrip()}{RESET}")

        console = env["SENTINEL_CONSOLE_URL"].rstrip("/")
        _say(f"\n{BOLD}officer console{RESET}: {console}/console/  (sign in with the API token {token})")
        _say("  every mail links to its alert's page there: acknowledge, snooze, record the filed report")
        _say(f"officer API: curl -H 'Authorization: Bearer {token}' {notify}/v1/alerts")
        case = f"{safety}/v1/trials/{protocol.trial_id}/subjects/{subject}/aes/AE-1"
        _say(f"SUSAR file and report drafts: curl -H 'Authorization: Bearer {token}' {case}/expedited")
        _say(f"  curl -OJ -H 'Authorization: Bearer {token}' {case}/reports/cioms.pdf   (and .../reports/e2b.xml)")
        _say(f"metrics: {ingest}/metrics  http://127.0.0.1:{ports['safety']}/metrics  {notify}/metrics")
        if keep_running:
            _say(f"\n{BOLD}running; Ctrl-C stops everything this demo started{RESET}")
            try:
                while services.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave services or the broker behind
        _say("stopping…")
        if services is not None and services.poll() is None:
            services.send_signal(signal.SIGTERM)
            try:
                services.wait(timeout=20)
            except subprocess.TimeoutExpired:
                services.kill()
        catcher.stop()
        if not broker_was_running:
            kafka_broker.down(broker_cfg)
            _say("  broker stopped")
