"""SMTP: one connection reused across messages, reconnecting when the server drops it.

Replies map onto the error classes: 4xx -> TemporaryError, 5xx -> PermanentError; a
connection lost during DATA -> UnknownOutcomeError, since the server may have accepted it.
"""

from __future__ import annotations

import smtplib
import ssl

from digest.errors import PermanentError, TemporaryError, UnknownOutcomeError
from digest.transports.base import Outbound, SingleMessageTransport


def _reply_error(code: int, text: bytes | str, envelope: Outbound, what: str) -> Exception:
    reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    cls = TemporaryError if 400 <= code < 500 else PermanentError
    return cls(
        f"SMTP {what} refused", transport="smtp", recipient=envelope.recipient, status=code, response=reply
    )


class SmtpTransport(SingleMessageTransport):
    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        security: str = "none",
        timeout: float = 30.0,
        local_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.security = security
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        try:
            if self.security == "tls":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    local_hostname=self.local_hostname,
                    context=ssl.create_default_context(),
                )
            else:
                conn = smtplib.SMTP(
                    self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname
                )
            conn.ehlo()
            if self.security == "starttls":
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if self.username:
                conn.login(self.username, self.password)
        except smtplib.SMTPAuthenticationError as err:
            raise PermanentError(
                "SMTP login failed", transport="smtp", status=err.smtp_code, response=str(err.smtp_error)
            ) from err
        except (OSError, smtplib.SMTPException) as err:
            raise TemporaryError(
                f"cannot connect to {self.host}:{self.port}: {err}", transport="smtp"
            ) from err
        return conn

    def open(self) -> None:
        if self._conn is None:
            self._conn = self._connect()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                self._conn.close()
            self._conn = None

    def _reset(self) -> None:
        """RSET after a refusal; a server that hung up (421 does) just loses the connection."""
        if self._conn is None:
            return
        try:
            self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def deliver(self, envelope: Outbound) -> str:
        message = envelope.wire()
        self.open()
        conn = self._conn
        assert conn is not None
        try:
            code, text = conn.mail(envelope.envelope_sender)
            if code != 250:
                self._reset()
                raise _reply_error(code, text, envelope, "sender")
            code, text = conn.rcpt(envelope.recipient)
            if code not in (250, 251):
                self._reset()
                raise _reply_error(code, text, envelope, "recipient")
        except (smtplib.SMTPServerDisconnected, OSError) as err:
            # Nothing was handed over yet: safe to retry on a new connection.
            self._drop()
            raise TemporaryError(
                f"connection lost before DATA: {err}", transport="smtp", recipient=envelope.recipient
            ) from err
        try:
            code, text = conn.data(message)
        except smtplib.SMTPDataError as err:
            self._reset()
            raise _reply_error(err.smtp_code, err.smtp_error, envelope, "message") from err
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as err:
            self._drop()
            raise UnknownOutcomeError(
                f"connection lost during DATA: {err}", transport="smtp", recipient=envelope.recipient
            ) from err
        if code != 250:  # smtplib returns the final reply to DATA instead of raising
            self._reset()
            raise _reply_error(code, text, envelope, "message")
        return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
