"""A local SMTP mail catcher: accepts every message and saves it as an .eml file.

Why: the notify service sends real SMTP; in development and tests we want to see
(and assert on) what it sent without a mail server or delivering anything.

Usage: ``python -m services.devstack.mail_catcher --port 1025 --dir var/mail``.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import itertools
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller

log = logging.getLogger(__name__)

OnMessage = Callable[[Path, Any], None]
"""Called as ``on_message(path, envelope)`` in the SMTP thread after a message is saved."""


class _Controller(Controller):
    """Controller that supports port 0: learns the real port before aiosmtpd connects to it."""

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated


class _SaveHandler:
    """aiosmtpd handler: writes each message to ``<dir>/<UTC time>-<seq>.eml`` atomically."""

    def __init__(self, directory: Path, on_message: OnMessage | None) -> None:
        self.directory = directory
        self.on_message = on_message
        self._seq = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # name fixed by aiosmtpd
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", errors="surrogateescape")
        # Envelope recipients include Bcc, which the headers don't show: keep them (aiosmtpd's convention).
        head = f"X-MailFrom: {envelope.mail_from}\r\nX-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n"
        path = self._write(head.encode() + content)
        if self.on_message is not None:
            try:
                self.on_message(path, envelope)
            except Exception:  # the message is saved; a broken callback must not fail the SMTP session
                log.exception("mail catcher on_message callback failed for %s", path)
        return "250 Message accepted for delivery"

    def _write(self, data: bytes) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.directory / f"{stamp}-{next(self._seq):04d}.eml"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path


class MailCatcher:
    """An SMTP server on ``host:port`` (port 0 picks a free one) saving mail under ``directory``."""

    def __init__(
        self,
        directory: Path | str = Path("var/mail"),
        *,
        host: str = "127.0.0.1",
        port: int = 1025,
        on_message: OnMessage | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        self._requested_port = port
        self._handler = _SaveHandler(self.directory, on_message)
        self._controller: _Controller | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (differs from the requested one when that was 0)."""
        return int(self._controller.port) if self._controller is not None else self._requested_port

    def start(self) -> None:
        if self._controller is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # server_hostname avoids aiosmtpd's socket.getfqdn(), which can stall on a machine without DNS.
        controller = _Controller(
            self._handler, hostname=self.host, port=self._requested_port, server_hostname="localhost"
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def paths(self) -> list[Path]:
        """Saved messages, oldest first (file names sort by receive time)."""
        return sorted(self.directory.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        parser = BytesParser(policy=email.policy.default)
        result: list[EmailMessage] = []
        for path in self.paths():
            with path.open("rb") as fh:
                msg = parser.parse(fh)
            assert isinstance(msg, EmailMessage)  # guaranteed by policy.default
            result.append(msg)
        return result


def _print_summary(path: Path, envelope: Any) -> None:
    with path.open("rb") as fh:
        msg = BytesParser(policy=email.policy.default).parse(fh, headersonly=True)
    print(
        f"mail from {msg.get('From', envelope.mail_from)} to {', '.join(envelope.rcpt_tos)}: "
        f"{msg.get('Subject', '(no subject)')}  [{path}]",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the catcher until Ctrl-C, printing From/To/Subject of each message."""
    parser = argparse.ArgumentParser(description="Local SMTP mail catcher (saves .eml files).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args(argv)
    catcher = MailCatcher(args.dir, host=args.host, port=args.port, on_message=_print_summary)
    try:
        catcher.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"Mail catcher on {args.host}:{catcher.port}, saving to {args.dir} (Ctrl-C to stop).", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        catcher.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
