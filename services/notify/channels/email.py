"""SMTP e-mail channel: plain text plus HTML, optional TLS/STARTTLS and auth."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Protocol

from services.notify.channels import DeliveryError as DeliveryError
from services.notify.channels import OutgoingMessage


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0


class MailChannel(Protocol):
    """What sends one built e-mail (SMTP here, a fake in tests)."""

    @property
    def sender(self) -> str: ...

    async def send(self, message: EmailMessage) -> None: ...


def stable_message_id(delivery_id: str, sender: str) -> str:
    """The same Message-ID for every attempt of one delivery, so a client merges a rare duplicate."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "sentinel.invalid"
    local = "".join(c for c in delivery_id if c.isalnum() or c in "-._") or "delivery"
    return f"<{local}@{domain}>"


def build_message(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str,
    delivery_id: str,
    attempt: int = 1,
    after_interruption: bool = False,
    digest_of: tuple[str, ...] = (),
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = " ".join(subject.split())  # free text from a site may hold line breaks
    message["Message-ID"] = stable_message_id(delivery_id, sender)
    message["X-Sentinel-Delivery"] = delivery_id
    message["X-Sentinel-Attempt"] = str(attempt)
    if after_interruption:
        message["X-Sentinel-Possible-Duplicate"] = "yes: an earlier attempt was interrupted after the hand-off"
    if digest_of:
        message["X-Sentinel-Digest-Of"] = ", ".join(digest_of)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class SmtpChannel:
    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    @property
    def sender(self) -> str:
        return self._config.sender

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        cfg = self._config
        try:
            client: smtplib.SMTP
            if cfg.ssl:
                client = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            with client:
                if cfg.starttls and not cfg.ssl:
                    client.starttls(context=ssl.create_default_context())
                if cfg.username:
                    client.login(cfg.username, cfg.password or "")
                client.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc


class EmailDelivery:
    """The e-mail side of the channel interface: builds the MIME message and hands it to a MailChannel."""

    def __init__(self, mail: MailChannel) -> None:
        self._mail = mail

    async def deliver(self, message: OutgoingMessage) -> None:
        await self._mail.send(
            build_message(
                sender=self._mail.sender,
                recipient=message.recipient,
                subject=message.subject,
                text=message.text,
                html=message.html,
                delivery_id=message.delivery_id,
                attempt=message.attempt,
                after_interruption=message.after_interruption,
                digest_of=message.digest_of,
            )
        )
