"""The one HTTP base every provider transport stands on; each provider module holds only its differences.

The base owns the sequence: split the batch into requests (`requests_for`), build each request
(`build_request`), post it, and map the answer onto one `Outcome` per message (`parse_success`
for a 2xx, `refused` for a 400/422, the shared status mapping for the rest). It also owns
the sessions (one `requests.Session` per thread: the send run calls `send_batch` from several
threads), the timeouts, the User-Agent, the provider's documented request rate, Retry-After
and quoting the provider's JSON error body into every outcome's detail.

Status mapping, the same for every provider unless its module says otherwise:

| answer | outcome |
| --- | --- |
| 2xx | the provider's per-message results (`parse_success`) |
| 400, 422 | FAILED for the messages the error names and DEFERRED for the others (nothing |
|          | was sent); FAILED for all when it names none |
| 401, 403 | `PermanentError` naming the credential's environment variable |
| 429 | DEFERRED, `rate_limited`, `retry_after` from Retry-After (seconds or an HTTP date) |
| 408, 5xx but 504 | DEFERRED (the provider took nothing) |
| 504 | UNKNOWN: a gateway gave up waiting on a back end that may have accepted it |
| other 3xx/4xx | FAILED, with the provider's answer |
| refused, or dropped before the whole body went out | DEFERRED: nothing can have been acted on |
| timeout or drop after the whole body went out | UNKNOWN for the request's messages (SMTP after DATA) |
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.filepost import encode_multipart_formdata

from digest import __version__
from digest.errors import PermanentError
from digest.transports.base import Outbound, Outcome, Result, Transport, complete

USER_AGENT = f"digest/{__version__}"

# Header fields a JSON provider sets from its own fields, or builds itself with the MIME structure.
_NOT_PASSED_THROUGH = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
_DETAIL_LIMIT = 1000  # characters of a provider's answer kept in an outcome's detail


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request to the provider: the path under `base_url`, the encoded body, extra headers."""

    path: str
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None  # HTTP basic auth (Mailgun)


def json_request(path: str, payload: Any, headers: dict[str, str] | None = None) -> ApiRequest:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return ApiRequest(path, body, "application/json", dict(headers or {}))


def form_request(
    path: str,
    fields: Sequence[tuple[str, str | tuple[str, bytes, str]]],
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> ApiRequest:
    """A multipart/form-data request; a field given as (filename, bytes, type) is a file upload."""
    body, content_type = encode_multipart_formdata(list(fields))
    return ApiRequest(path, body, content_type, dict(headers or {}), auth)


class _SentBody(io.BytesIO):
    """A request body that knows whether all of it went to the socket.

    urllib3 reads a file-like body block by block and sends each block before reading the
    next; the read that finds the end comes only after the last block was sent. An error
    before that means the provider never had the whole request, so it cannot have acted on it.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.all_sent = False

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if not chunk:
            self.all_sent = True
        return chunk


class RequestPacer:
    """Spaces requests at least 1/`per_second` apart, across every thread of one transport.

    The provider's documented request rate (Resend: 2 per second by default), enforced here so
    that `concurrency` threads together stay under it. Clock and sleep are injected for tests.
    """

    def __init__(
        self,
        per_second: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0:
            raise ValueError(f"requests per second must be positive, not {per_second!r}")
        self.interval = 1.0 / per_second
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = float("-inf")

    def wait(self) -> None:
        with self._lock:  # reserve the next slot; sleep outside the lock so others can reserve theirs
            now = self._monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def parse_address(value: str) -> tuple[str, str]:
    """(display name, address) of a From/To header value, RFC 2047 words decoded."""
    header = policy.default.header_factory("To", value)
    addresses = getattr(header, "addresses", ())
    if not addresses:
        raise ValueError(f"not an e-mail address: {value!r}")
    return addresses[0].display_name, addresses[0].addr_spec


def display_address(value: str) -> str:
    """A header address as providers take it in JSON: `Name <addr>`, unencoded, quoted where needed."""
    name, address = parse_address(value)
    if not name:
        return address
    if re.search(r'[()<>\[\]:;@\\,."]', name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def passed_through(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Of these header fields, those a JSON provider carries as custom headers (List-*, Message-ID,
    Date, Precedence, ...): not the ones it sets from its own fields or builds with the MIME."""
    return {k: v for k, v in headers if k.lower() not in _NOT_PASSED_THROUGH}


UNKNOWN_RETRY_SECONDS = 2.0  # the wait before the n-th idempotent retry: 2 s, 4 s, ...


def _after_unknown(before: Outcome, now: Outcome | None, attempt: int) -> Outcome:
    """A message's outcome once a retry of its unanswered request came back."""
    if before.result is not Result.UNKNOWN:
        return before
    if now is not None and now.result in (Result.SENT, Result.FAILED):
        return now
    said = now.detail if now is not None else "no outcome"
    return Outcome(
        before.key, Result.UNKNOWN, f"{before.detail}; sent again {attempt}x with the same key: {said}"
    )


def describe_answer(response: requests.Response) -> str:
    """The provider's answer for a detail: its JSON compacted (the error it gives), else its text."""
    try:
        body = json.dumps(response.json(), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        body = response.text.strip()
    return body[:_DETAIL_LIMIT]


class HttpTransport(Transport):
    """A provider reached over HTTPS. Subclasses set the class attributes and implement the hooks."""

    default_base_url: str = ""
    credential_variable: str = ""  # the environment variable holding the credential, for 401/403
    # Requests per second the provider documents, for all threads together; None where it states none.
    max_requests_per_second: float | None = None

    def __init__(
        self,
        *,
        base_url: str = "",
        timeout: float = 30.0,
        concurrency: int | None = None,
        requests_per_second: float | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        pacer: RequestPacer | None = None,
        retry_wait: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        if not self.base_url:
            raise ValueError(f"{type(self).__name__} needs a base_url")
        self.timeout = timeout
        if concurrency:
            self.concurrency = concurrency
        rate = requests_per_second or self.max_requests_per_second
        self.requests_per_second = rate
        if rate:
            self.max_per_second = rate * self.max_batch
        self._pacer = pacer or (RequestPacer(rate) if rate else None)
        self._now = now
        self._retry_wait = retry_wait  # between idempotent retries of an unanswered request
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    # --- hooks: what a provider module implements ------------------------------------------------

    # Times an unanswered request is posted again as it was (same body, same idempotency key);
    # only for providers that deduplicate by that key (Resend).
    unknown_retries: int = 0

    def requests_for(self, batch: Sequence[Outbound]) -> list[Sequence[Outbound]]:
        """How the batch splits into requests; by default one request for the whole batch."""
        return [batch]

    def build_request(self, group: Sequence[Outbound]) -> ApiRequest:
        """The request that hands `group` over."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_request(group)")

    def parse_success(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome]:
        """One outcome per message from a 2xx answer (partial success included)."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_success(group, response)")

    def refused(self, group: Sequence[Outbound], response: requests.Response) -> set[str] | None:
        """For a 400/422: the keys of the messages the error names, or None when it names none."""
        return None

    def classify(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome] | None:
        """A provider's own reading of a non-2xx answer, before the shared mapping; None to use it."""
        return None

    def retry_after(self, response: requests.Response) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"), self._now())

    def session_headers(self) -> dict[str, str]:
        """Headers every request carries (the credential)."""
        return {}

    # --- the sequence ------------------------------------------------------------------------

    def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        if not batch:
            return []
        if len(batch) > self.max_batch:
            raise ValueError(
                f"{self.name} takes at most {self.max_batch} messages per batch, not {len(batch)}"
            )
        outcomes: list[Outcome] = []
        groups = self.requests_for(batch)
        for i, group in enumerate(groups):
            try:
                group_outcomes, go_on = self._send_group(group)
            except PermanentError as err:
                if not outcomes:
                    raise  # nothing of this batch was handed over: the whole batch fails with it
                # Earlier requests were accepted: keep their outcomes, fail the rest with the reason.
                rest = [o for g in groups[i:] for o in g]
                outcomes += [Outcome(o.key, Result.FAILED, str(err)) for o in rest]
                break
            outcomes += group_outcomes
            if not go_on:
                # The provider is in trouble (rate limit, 5xx, no answer): send it nothing more now.
                stop = next(o for o in group_outcomes if o.result is not Result.SENT)
                rest = [o for g in groups[i + 1 :] for o in g]
                outcomes += [
                    Outcome(
                        o.key,
                        Result.DEFERRED,
                        f"not sent: an earlier request of the batch got: {stop.detail}",
                        retry_after=stop.retry_after,
                        rate_limited=stop.rate_limited,
                    )
                    for o in rest
                ]
                break
        return complete(batch, outcomes, transport=self.name)

    def _send_group(self, group: Sequence[Outbound]) -> tuple[list[Outcome], bool]:
        """Post one request; its outcomes, and whether the batch's other requests may go on.

        A provider whose requests carry an idempotency key (`unknown_retries` > 0) gets a request
        that went unanswered again, byte for byte with the same key, so the provider sends each
        message once whichever attempt reached it. After an unanswered attempt only a definite
        answer (sent, failed) settles a message: anything else stays unknown.
        """
        request = self.build_request(group)
        outcomes, go_on = self._post(group, request)
        for attempt in range(1, self.unknown_retries + 1):
            if not any(o.result is Result.UNKNOWN for o in outcomes):
                break
            self._retry_wait(UNKNOWN_RETRY_SECONDS * attempt)
            again, go_on = self._post(group, request)
            by_key = {o.key: o for o in again}
            outcomes = [_after_unknown(o, by_key.get(o.key), attempt) for o in outcomes]
        return outcomes, go_on

    def _post(self, group: Sequence[Outbound], request: ApiRequest) -> tuple[list[Outcome], bool]:
        if self._pacer is not None:
            self._pacer.wait()
        body = _SentBody(request.body)
        url = self.base_url + request.path
        try:
            response = self._session().post(
                url,
                data=body,
                headers={
                    "Content-Type": request.content_type,
                    "Accept": "application/json",
                    **request.headers,
                },
                auth=request.auth,
                timeout=(self.timeout, self.timeout),
                allow_redirects=False,
            )
        except requests.RequestException as err:
            if body.all_sent:
                detail = (
                    f"{self.name}: no answer after the request was sent ({type(err).__name__}: {err}); "
                    "the provider may have accepted it"
                )
                return [Outcome(o.key, Result.UNKNOWN, detail) for o in group], False
            detail = f"{self.name}: request not sent ({type(err).__name__}: {err})"
            return [Outcome(o.key, Result.DEFERRED, detail) for o in group], False
        return self._answer(group, response)

    def _answer(self, group: Sequence[Outbound], response: requests.Response) -> tuple[list[Outcome], bool]:
        status = response.status_code
        if 200 <= status < 300:
            return self.parse_success(group, response), True
        detail = f"{self.name} answered HTTP {status}: {describe_answer(response)}"
        own = self.classify(group, response)
        if own is not None:
            return own, all(o.result in (Result.SENT, Result.FAILED) for o in own)
        if status in (401, 403):
            raise PermanentError(
                f"{self.name} refused the credentials: check {self.credential_variable} "
                "and the account's sending rights",
                transport=self.name,
                status=status,
                response=describe_answer(response),
            )
        if status == 429:
            wait = self.retry_after(response)
            return [
                Outcome(o.key, Result.DEFERRED, detail, retry_after=wait, rate_limited=True) for o in group
            ], False
        if status in (400, 422):
            named = self.refused(group, response)
            if named is None:
                return [Outcome(o.key, Result.FAILED, detail) for o in group], True
            others = f"not sent: {self.name} refused the request for another message of it ({detail})"
            return [
                Outcome(o.key, Result.FAILED, detail)
                if o.key in named
                else Outcome(o.key, Result.DEFERRED, others)
                for o in group
            ], True
        if status == 504:
            unknown = f"{detail}; the provider may have accepted it"
            return [Outcome(o.key, Result.UNKNOWN, unknown) for o in group], False
        if status == 408 or status >= 500:
            wait = self.retry_after(response)
            return [Outcome(o.key, Result.DEFERRED, detail, retry_after=wait) for o in group], False
        return [Outcome(o.key, Result.FAILED, detail) for o in group], True

    # --- sessions ----------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        """This thread's session: requests.Session is not documented as thread-safe."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.headers.update(self.session_headers())
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def open(self) -> None:
        self._session()

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()
