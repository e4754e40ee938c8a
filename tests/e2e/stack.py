"""The three services as real processes (`sentinel run <service>`), wired to fresh topics and a mail catcher."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from services.devstack.scenario import new_webhook_secret
from tests.polling import wait_for

SENTINEL = str(Path(sys.executable).with_name("sentinel"))
PORT_ENV = {"ingest": "SENTINEL_INGEST_PORT", "safety": "SENTINEL_SAFETY_PORT", "notify": "SENTINEL_NOTIFY_PORT"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    def __init__(self, root: Path, *, kafka_bootstrap: str, topic_prefix: str, smtp_port: int) -> None:
        self.root = root
        self.secret = new_webhook_secret()
        self.token = "e2e-officer-" + uuid.uuid4().hex
        self.ports = {name: free_port() for name in PORT_ENV}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        self.env = {
            **clean,
            "SENTINEL_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SENTINEL_CLINICAL_TOPIC": f"{topic_prefix}.clinical",
            "SENTINEL_SIGNALS_TOPIC": f"{topic_prefix}.signals",
            "SENTINEL_VAR_DIR": str(root / "var"),
            "SENTINEL_SAFETY_GROUP_ID": f"{topic_prefix}-safety",
            "SENTINEL_NOTIFY_GROUP_ID": f"{topic_prefix}-notify",
            "SENTINEL_WEBHOOK_SECRETS": f'{{"edc": "{self.secret}"}}',
            "SENTINEL_API_TOKENS": f'{{"{self.token}": {{"user": "dr.e2e", "role": "officer"}}}}',
            "SENTINEL_SMTP_PORT": str(smtp_port),
            "SENTINEL_DISPATCH_POLL_SECONDS": "0.2",
            **{env: str(self.ports[name]) for name, env in PORT_ENV.items()},
        }

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, service: str, *, name: str | None = None, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start `sentinel run <service>`; a `name` other than the service's starts another replica."""
        name = name or service
        self.ports.setdefault(name, free_port())
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(
            [SENTINEL, "run", service, "--log-level", "warning"],
            env={**self.env, PORT_ENV[service]: str(self.ports[name]), **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[name] = process
        return process

    def wait_ready(self, service: str, timeout: float = 60) -> None:
        def ready() -> bool:
            process = self.processes[service]
            if process.poll() is not None:
                raise AssertionError(f"{service} exited with {process.returncode}: {self.log(service)[-2000:]}")
            try:
                return httpx.get(self.url(service) + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=timeout, interval=0.2, what=f"{service} ready")

    def log(self, service: str) -> str:
        return (self.root / f"{service}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
