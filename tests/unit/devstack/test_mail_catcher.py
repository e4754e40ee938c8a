"""The mail catcher saves what smtplib sends (real SMTP over loopback, port 0)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from services.devstack.mail_catcher import MailCatcher


def _mail(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sentinel@example.org"
    msg["To"] = "investigator@example.org"
    msg["Subject"] = subject
    msg.set_content("Grade 4 neutropenia reported for subject 001-0007.")
    return msg


def test_saves_each_message_and_calls_back(tmp_path: Path) -> None:
    seen: list[tuple[Path, list[str]]] = []

    def on_message(path: Path, envelope: Any) -> None:
        seen.append((path, list(envelope.rcpt_tos)))

    with MailCatcher(tmp_path / "mail", port=0, on_message=on_message) as catcher:
        assert catcher.port != 0
        with smtplib.SMTP(catcher.host, catcher.port, timeout=5) as smtp:
            smtp.send_message(_mail("SAE alert 1"), to_addrs=["investigator@example.org", "bcc@example.org"])
            smtp.send_message(_mail("SAE alert 2 — ünïcode"))

        messages = catcher.messages()

    assert [m["Subject"] for m in messages] == ["SAE alert 1", "SAE alert 2 — ünïcode"]
    assert messages[0]["X-RcptTo"] == "investigator@example.org, bcc@example.org"
    assert "Grade 4 neutropenia" in messages[0].get_content()
    files = sorted((tmp_path / "mail").iterdir())
    assert [p.suffix for p in files] == [".eml", ".eml"]  # no temp files left behind
    assert [p for p, _ in seen] == files
    assert seen[0][1] == ["investigator@example.org", "bcc@example.org"]


def test_stop_is_idempotent_and_port_survives(tmp_path: Path) -> None:
    catcher = MailCatcher(tmp_path, port=0)
    catcher.start()
    port = catcher.port
    catcher.stop()
    catcher.stop()
    assert catcher.port == 0  # back to the requested value once stopped
    assert port > 0
    assert catcher.messages() == []
