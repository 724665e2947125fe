"""SMTP: a thread-safe pool of connections to one relay, each carrying many messages.

`send_batch` checks one connection out of the pool, hands the batch's messages over it one
after another, and checks it back in; up to `connections` batches go out at once. What each
server answer means for the message (the ledger's closed set, see `base.Result`):

- 2xx to the final dot: SENT, with the server's reply (queue id) as the detail.
- 4xx at any step: DEFERRED; 5xx: FAILED. The detail keeps the reply, enhanced status code
  included ("RCPT TO refused: 550 5.1.1 no such user").
- 421, a dropped connection or a timeout before the final dot of DATA went out: DEFERRED,
  since a server never takes a message whose end it has not seen. The connection is discarded.
- A drop or timeout after the final dot, before the reply: UNKNOWN (it may have been delivered;
  never retried blindly). The connection is discarded.

After a lost connection the batch goes on over a new one; after a timeout (the server stopped
answering) or two lost connections in a row, the rest of the batch is DEFERRED untried.
A connection that waited in the pool may have been closed by the server meanwhile (Postfix
answers 421 when its idle timeout strikes): if its first transaction is refused that way before
DATA, that message is tried once more on a new connection, since nothing was handed over.

Speed: our wire bytes are CRLF-only by construction (`Outbound.wire_is_crlf`), so the DATA
payload is written directly (dot-stuffed only where a line starts with ".", found with
`bytes.find`) instead of through `smtplib.SMTP.data`'s regex; MAIL FROM and RCPT TO go in one
write when the server offers PIPELINING (RFC 2920). smtplib does the rest: connect, EHLO,
STARTTLS, AUTH, reading replies.
"""

from __future__ import annotations

import logging
import queue
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from digest.errors import PermanentError, TemporaryError, TransportError
from digest.transports.base import Outbound, Outcome, Result, Transport, data_after_354

log = logging.getLogger(__name__)

_BARE_EOL = re.compile(rb"\r\n|\r|\n")
# Characters that would end or forge an SMTP command if they reached MAIL FROM / RCPT TO.
_UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x20<>\x7f]")
# How relays word a rate limit in a 4xx reply ("4.7.0 rate limit exceeded", "too many messages").
_RATE_LIMIT = re.compile(r"\brate\b|ratelimit|too many (messages|mails|recipients|connections)", re.I)


# A message ready for DATA (the dot-stuffed payload, the size for SIZE=), or why it is not.
_Data = tuple[bytes, int] | Exception


@dataclass
class _Connection:
    """One SMTP session and what its server offers."""

    smtp: smtplib.SMTP
    generation: int  # the pool's generation when opened: a connection from before close() is quit
    pipelining: bool
    size: bool
    smtputf8: bool
    eightbitmime: bool
    transactions: int = 0  # MAIL FROM commands sent over it
    waited: bool = False  # has sat in the pool since its last transaction


@dataclass
class _Attempt:
    """One message's outcome over one connection, and what it did to the connection."""

    outcome: Outcome
    lost: bool = False  # the connection is gone (421, drop, timeout, protocol confusion)
    timed_out: bool = False
    handed_over: bool = False  # the final dot went out
    answered: bool = False  # lost only because we drop the connection: the server did answer


def data_payload(data: bytes, *, crlf_only: bool) -> bytes:
    """The bytes that follow a 354 reply: the message with CRLF line ends, dot-stuffed
    (RFC 5321 4.5.2), and the terminating CRLF.CRLF.

    `crlf_only` says the caller guarantees CRLF line ends; otherwise they are checked (three
    `count`s) and bare CR or LF normalised, as smtplib does for text.
    """
    if not crlf_only:
        lf = data.count(b"\n")
        if lf != data.count(b"\r\n") or data.count(b"\r") != lf:
            data = _BARE_EOL.sub(b"\r\n", data)
    return data_after_354(data)


def _refusal(key: str, code: int, detail: str) -> Outcome:
    """4xx: DEFERRED, flagged when the reply says it is a rate limit (the run records those);
    5xx: FAILED."""
    if code >= 500:
        return Outcome(key, Result.FAILED, detail)
    return Outcome(key, Result.DEFERRED, detail, rate_limited=_RATE_LIMIT.search(detail) is not None)


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split("\n"))


def _timed_out(err: BaseException) -> bool:
    """smtplib turns a read timeout into SMTPServerDisconnected; the timeout is its context."""
    return isinstance(err, TimeoutError) or isinstance(err.__context__, TimeoutError)


class SmtpTransport(Transport):
    """A pool of up to `connections` SMTP connections to one relay."""

    name = "smtp"
    # One batch holds a connection while it is sent; 50 keeps batches short next to the
    # per-connection cap and lets the run record outcomes in group commits.
    max_batch = 50
    # Calls handing_over() just before each message's final part goes out, and answered() after.
    marks_each_handover = True

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
        connections: int = 4,
        max_messages_per_connection: int = 100,
        ca_file: str | Path = "",
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be none, starttls or tls, not {security!r}")
        if connections < 1 or max_messages_per_connection < 1:
            raise ValueError("connections and max_messages_per_connection must be at least 1")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.security = security
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.concurrency = connections
        self.max_messages_per_connection = max_messages_per_connection
        self._tls: ssl.SSLContext | None = None
        if security != "none":
            try:
                # Certificates and host names are checked; ca_file replaces the system's CAs.
                self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as err:
                raise ValueError(f"cannot load CA certificates from {ca_file}: {err}") from err
        self._generation = 0
        self._lock = threading.Lock()
        # The pool: one slot per allowed connection, None where none is open yet. LIFO keeps
        # the warm connections busy and lets the others idle.
        self._pool: queue.LifoQueue[_Connection | None] = queue.LifoQueue()
        for _ in range(connections):
            self._pool.put(None)

    # --- pool -----------------------------------------------------------------------------

    def open(self) -> None:
        """Open one connection now, so an unreachable relay or a refused login stops the run
        before its first batch; the others open when they are first needed."""
        conn = self._pool.get()
        try:
            if conn is None:
                conn = self._connect()
        finally:
            self._checkin(conn)

    def close(self) -> None:
        """Quit every pooled connection; one still checked out is quit when it comes back."""
        with self._lock:
            self._generation += 1
        drained: list[_Connection | None] = []
        while True:
            try:
                drained.append(self._pool.get_nowait())
            except queue.Empty:
                break
        for conn in drained:
            if conn is not None:
                self._quit(conn)
            self._pool.put(None)

    def _checkin(self, conn: _Connection | None) -> None:
        if conn is not None:
            with self._lock:
                stale = conn.generation != self._generation
            if stale:
                self._quit(conn)
                conn = None
            else:
                conn.waited = True
        self._pool.put(conn)

    def _connect(self) -> _Connection:
        """A new logged-in connection. Raises TemporaryError (unreachable, 4xx, dropped) or
        PermanentError (refused login, bad certificate, no STARTTLS or AUTH on offer)."""
        where = f"{self.host}:{self.port}"
        try:
            if self.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=self._tls,
                )
            else:
                smtp = smtplib.SMTP(
                    self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
        except smtplib.SMTPConnectError as err:  # the greeting was not 220
            raise self._session_error(
                f"{where} refused the connection", err.smtp_code, err.smtp_error
            ) from err
        except ssl.SSLCertVerificationError as err:
            raise PermanentError(
                f"cannot verify the certificate of {where}: {err.verify_message}", transport="smtp"
            ) from err
        except (OSError, smtplib.SMTPException) as err:
            raise TemporaryError(f"cannot connect to {where}: {err}", transport="smtp") from err
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise PermanentError(
                        f"{where} does not offer STARTTLS; not sending in the clear", transport="smtp"
                    )
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if self.username:
                if not smtp.has_extn("auth"):
                    raise PermanentError(
                        f"{where} offers no AUTH on this connection (does it want TLS first?)",
                        transport="smtp",
                    )
                smtp.login(self.username, self.password)
            sock = smtp.sock
            assert sock is not None
            # Every write is a whole command or message: do not let Nagle hold its tail back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TransportError:
            smtp.close()
            raise
        except smtplib.SMTPAuthenticationError as err:
            smtp.close()
            raise PermanentError(
                f"SMTP login as {self.username!r} refused",
                transport="smtp",
                status=err.smtp_code,
                response=_text(err.smtp_error),
            ) from err
        except smtplib.SMTPResponseException as err:  # EHLO/HELO, STARTTLS refused
            smtp.close()
            raise self._session_error(f"{where} refused the session", err.smtp_code, err.smtp_error) from err
        except ssl.SSLCertVerificationError as err:
            smtp.close()
            raise PermanentError(
                f"cannot verify the certificate of {where}: {err.verify_message}", transport="smtp"
            ) from err
        except (OSError, smtplib.SMTPException) as err:
            smtp.close()
            raise TemporaryError(
                f"connection to {where} lost while setting up: {err}", transport="smtp"
            ) from err
        with self._lock:
            generation = self._generation
        log.debug("smtp: connected to %s", where)
        return _Connection(
            smtp=smtp,
            generation=generation,
            pipelining=smtp.has_extn("pipelining"),
            size=smtp.has_extn("size"),
            smtputf8=smtp.has_extn("smtputf8"),
            eightbitmime=smtp.has_extn("8bitmime"),
        )

    @staticmethod
    def _session_error(message: str, code: int, reply: bytes | str) -> TransportError:
        cls = PermanentError if 500 <= code < 600 else TemporaryError
        return cls(message, transport="smtp", status=code, response=_text(reply))

    @staticmethod
    def _quit(conn: _Connection) -> None:
        try:
            conn.smtp.quit()
        except (OSError, smtplib.SMTPException):
            conn.smtp.close()

    # --- sending --------------------------------------------------------------------------

    def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        if not batch:
            return []
        conn = self._pool.get()
        try:
            outcomes, conn = self._send_over(conn, batch)
        except BaseException:
            if conn is not None:  # a bug or an interrupt mid-conversation: its state is unknown
                conn.smtp.close()
                conn = None
            raise
        finally:
            self._checkin(conn)
        return outcomes

    def _send_over(
        self, conn: _Connection | None, batch: Sequence[Outbound]
    ) -> tuple[list[Outcome], _Connection | None]:
        outcomes: list[Outcome] = []
        losses_in_a_row = 0
        ahead: dict[int, _Data] = {}  # the next message, built while the server answered this one

        def build_next(index: int) -> None:
            if index + 1 < len(batch) and index + 1 not in ahead:
                ahead[index + 1] = self._build(batch[index + 1])

        for index, outbound in enumerate(batch):
            data = ahead.pop(index) if index in ahead else self._build(outbound)
            while_waiting = partial(build_next, index)
            if conn is None:
                try:
                    conn = self._connect()
                except TransportError as err:
                    outcomes += self._untried(batch[index:], f"not handed over: {err}")
                    return outcomes, None
            waited, conn.waited = conn.waited, False
            try:
                attempt = self._attempt(conn, outbound, data, while_waiting)
                if (
                    attempt.lost
                    and waited
                    and not (attempt.handed_over or attempt.timed_out or attempt.answered)
                ):
                    # The server closed this connection while it waited in the pool: try once more.
                    conn.smtp.close()
                    log.info("smtp: a pooled connection had been closed by the server; reconnecting")
                    try:
                        conn = self._connect()
                    except TransportError as err:
                        outcomes += self._untried(batch[index:], f"not handed over: {err}")
                        return outcomes, None
                    attempt = self._attempt(conn, outbound, data, while_waiting)
            except Exception as err:  # a bug mid-conversation: this one may have gone out, keep the others'
                log.exception("smtp: unexpected error sending to %s", outbound.recipient)
                conn.smtp.close()
                detail = f"unexpected error during the hand-over: {err!r}"
                outcomes.append(Outcome(outbound.key, Result.UNKNOWN, detail))
                outcomes += self._untried(batch[index + 1 :], "not tried after an unexpected error")
                return outcomes, None
            outcomes.append(attempt.outcome)
            self.answered(outbound, attempt.outcome)
            if attempt.lost:
                conn.smtp.close()
                conn = None
                losses_in_a_row += 1
                rest = batch[index + 1 :]
                if attempt.timed_out:
                    outcomes += self._untried(rest, "not tried: the server stopped answering")
                    return outcomes, None
                if losses_in_a_row >= 2:
                    outcomes += self._untried(rest, "not tried: the connection was lost twice in a row")
                    return outcomes, None
                continue
            losses_in_a_row = 0
            if conn.transactions >= self.max_messages_per_connection:
                self._quit(conn)  # relays often cap messages per connection: leave before they do
                conn = None
        return outcomes, conn

    @staticmethod
    def _untried(rest: Sequence[Outbound], detail: str) -> list[Outcome]:
        return [Outcome(o.key, Result.DEFERRED, detail) for o in rest]

    @staticmethod
    def _build(outbound: Outbound) -> _Data:
        """The DATA payload and the message's size, or why it could not be built."""
        try:
            if outbound.build_smtp_data is not None:
                return outbound.build_smtp_data()
            wire = outbound.wire()
            return data_payload(wire, crlf_only=outbound.wire_is_crlf), len(wire)
        except Exception as err:  # noqa: BLE001  nothing was sent for it; a bug in building the message
            log.exception("smtp: cannot build the message for %s", outbound.recipient)
            return err

    def _attempt(
        self, conn: _Connection, outbound: Outbound, data: _Data, while_waiting: Callable[[], None]
    ) -> _Attempt:
        """One mail transaction: MAIL FROM, RCPT TO, DATA, the message, its reply.

        `data` is what `_build` made of the message; `while_waiting` runs once the message has
        gone out, before its reply is read (the batch builds its next message then: a DKIM
        signature takes about as long as the server's answer, and overlaps it)."""
        key, sender, recipient = outbound.key, outbound.envelope_sender, outbound.recipient
        for role, address in (("sender", sender), ("recipient", recipient)):
            # An empty sender is the null reverse-path (MAIL FROM:<>); an empty recipient is nobody.
            if (role == "recipient" and not address) or _UNSAFE_IN_ADDRESS.search(address):
                return _Attempt(Outcome(key, Result.FAILED, f"invalid envelope {role} address {address!r}"))
        utf8 = not (sender.isascii() and recipient.isascii())
        if utf8 and not conn.smtputf8:
            detail = "the address is not ASCII and the server does not offer SMTPUTF8 (RFC 6531)"
            return _Attempt(Outcome(key, Result.FAILED, detail))
        if isinstance(data, Exception):
            return _Attempt(
                Outcome(key, Result.DEFERRED, f"not handed over: cannot build the message: {data!r}")
            )
        payload, size = data
        options = f" SIZE={size}" if conn.size else ""
        if utf8:
            options += " SMTPUTF8"
        elif conn.eightbitmime and not payload.isascii():
            options += " BODY=8BITMIME"
        mail = f"MAIL FROM:<{sender}>{options}\r\n".encode()
        rcpt = f"RCPT TO:<{recipient}>\r\n".encode()
        smtp, sock = conn.smtp, conn.smtp.sock
        assert sock is not None
        conn.transactions += 1
        step = "MAIL FROM"
        try:
            if conn.pipelining:
                # RFC 2920: MAIL, RCPT and DATA in one write, the replies read in order. One
                # round trip fewer per message than waiting for RCPT's reply before DATA (each
                # wait is a blocking read, then the GIL to take back from the other threads).
                sock.sendall(mail + rcpt + b"DATA\r\n")
                mail_reply = smtp.getreply()
                if mail_reply[0] == 421:
                    return self._refused(conn, outbound, step, mail_reply)
                step = "RCPT TO"
                rcpt_reply = smtp.getreply()
                if rcpt_reply[0] == 421:
                    return self._refused(conn, outbound, step, rcpt_reply)
                step = "DATA"
                data_reply = smtp.getreply()
                if data_reply[0] == 354 and (mail_reply[0] != 250 or rcpt_reply[0] not in (250, 251)):
                    # A server must refuse DATA after a refused MAIL or RCPT; one that did not
                    # is given an empty message to no one, and the connection is not reused.
                    sock.sendall(b".\r\n")
                    smtp.getreply()
                    failed = ("MAIL FROM", mail_reply) if mail_reply[0] != 250 else ("RCPT TO", rcpt_reply)
                    attempt = self._refused(conn, outbound, *failed, reset=False)
                    return _Attempt(attempt.outcome, lost=True, answered=True)
            else:
                sock.sendall(mail)
                mail_reply = smtp.getreply()
                rcpt_reply = data_reply = (0, b"")
                if mail_reply[0] == 250:
                    step = "RCPT TO"
                    sock.sendall(rcpt)
                    rcpt_reply = smtp.getreply()
                    if rcpt_reply[0] in (250, 251):
                        step = "DATA"
                        sock.sendall(b"DATA\r\n")
                        data_reply = smtp.getreply()
            if mail_reply[0] != 250:
                return self._refused(conn, outbound, "MAIL FROM", mail_reply)
            if rcpt_reply[0] not in (250, 251):
                return self._refused(conn, outbound, "RCPT TO", rcpt_reply)
            if data_reply[0] != 354:
                return self._refused(conn, outbound, "DATA", data_reply)
            step = "the message"
            self.handing_over(outbound)  # from here on it may be delivered: the run's journal knows
            sock.sendall(payload)
        except (OSError, smtplib.SMTPException) as err:
            # The final dot has not gone out (sendall sends all or raises): nothing was taken.
            how = "timed out" if _timed_out(err) else "lost"
            detail = f"not handed over: connection {how} at {step}: {err}"
            return _Attempt(Outcome(key, Result.DEFERRED, detail), lost=True, timed_out=_timed_out(err))
        while_waiting()
        try:
            code, text = smtp.getreply()
        except (OSError, smtplib.SMTPException) as err:
            how = "timed out" if _timed_out(err) else "lost"
            detail = f"connection {how} after the message was handed over, before the reply: {err}"
            return _Attempt(
                Outcome(key, Result.UNKNOWN, detail), lost=True, timed_out=_timed_out(err), handed_over=True
            )
        if 200 <= code < 300:
            reply = _text(text)
            return _Attempt(Outcome(key, Result.SENT, f"{code} {reply}", provider_id=reply), handed_over=True)
        if 400 <= code < 600:  # the server refused what it was given: nothing to reset
            outcome = _refusal(key, code, f"message refused: {code} {_text(text)}")
            return _Attempt(outcome, lost=code == 421, handed_over=True)
        detail = f"unexpected reply after the message was handed over: {code} {_text(text)}"
        return _Attempt(Outcome(key, Result.UNKNOWN, detail), lost=True, handed_over=True)

    def _refused(
        self,
        conn: _Connection,
        outbound: Outbound,
        step: str,
        reply: tuple[int, bytes],
        *,
        reset: bool = True,
    ) -> _Attempt:
        """A refusal before the message went out: DEFERRED (4xx) or FAILED (5xx), then RSET
        (unless not `reset`: the caller drops the connection)."""
        code, text = reply
        detail = f"{step} refused: {code} {_text(text)}"
        if not 400 <= code < 600:  # a reply that makes no sense here: start afresh
            return _Attempt(Outcome(outbound.key, Result.DEFERRED, detail), lost=True)
        outcome = _refusal(outbound.key, code, detail)
        if code == 421 or not reset:  # 421: the server is closing the connection
            return _Attempt(outcome, lost=True)
        try:
            rset = conn.smtp.rset()  # end the transaction so the next MAIL FROM starts clean
        except (OSError, smtplib.SMTPException):
            return _Attempt(outcome, lost=True)
        return _Attempt(outcome, lost=rset[0] != 250)
