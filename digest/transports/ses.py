"""Amazon SES, API v2, through boto3: one `SendEmail` per message with the raw MIME bytes.

Raw content keeps our wire form exactly (List-Unsubscribe, quoted-printable parts, our own
DKIM signature when [dkim] is on); boto3 does the signing (SigV4), endpoints and
credentials, so nothing AWS-specific is written by hand here.

SES v2 has no batch form for raw messages (SendBulkEmail takes templates only), so a batch
is a short sequence of SendEmail calls on one worker thread; `concurrency` workers run
batches side by side on the one client (boto3 clients are thread-safe; sessions are not,
so the session is used only in `__init__`). Within a batch, an answer that is about this
message alone (MessageRejected, a bad request) fails that message and the next one goes;
an answer about the account or the endpoint (throttling, a suspended account, a 5xx, no
connection) also settles the rest of the batch without trying them, since they would get
the same answer.

What SES's answers mean for the ledger:
  throttling (429, TooManyRequests, Throttling, LimitExceeded) -> deferred, rate_limited
  MessageRejected, BadRequest and other 4xx about the message  -> failed (this message)
  account refusals (suspended, paused, MAIL FROM domain not verified, credentials refused,
  configuration set not found)                                -> failed (this and the rest)
  5xx, connection refused, connect timeout                     -> deferred (nothing was taken)
  read timeout or a dropped connection after sending           -> unknown (SES may have it)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from digest.errors import ConfigError
from digest.transports.base import Outbound, Outcome, Result, Transport

log = logging.getLogger(__name__)

CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN for temporary ones)"
)

THROTTLING = frozenset(
    {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException"}
)
# Refusals of the account or its set-up, not of one message: every other message would get the same.
ACCOUNT = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",  # on SendEmail: the configuration set does not exist
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    }
)


def _retry_after(headers: dict[str, str]) -> float | None:
    """Retry-After in seconds, when SES (or a proxy in front of it) sent one as a number."""
    value = headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class SesTransport(Transport):
    name = "ses"
    # Messages one worker sends in a row. Small: a claim of 14 (one second at the default rate)
    # spreads over three workers, and one slow answer holds up only a few messages behind it.
    max_batch = 5

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        endpoint_url: str = "",
        configuration_set: str = "",
        timeout: float = 30.0,
        concurrency: int = 8,
        max_per_second: float | None = 14.0,
        session: boto3.session.Session | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.max_per_second = max_per_second
        self.configuration_set = configuration_set
        try:
            session = session or boto3.session.Session(region_name=region)
            credentials = session.get_credentials()
        except ProfileNotFound as err:
            raise ConfigError("environment", "AWS_PROFILE", f"names no AWS profile: {err}") from None
        except PartialCredentialsError as err:
            missing = err.kwargs.get("cred_var", "a variable")
            raise ConfigError(
                "environment", missing, f"is not set, but other AWS credentials are ({err})"
            ) from None
        if credentials is None:
            raise ConfigError(
                "environment",
                "AWS_ACCESS_KEY_ID",
                f"boto3 found no AWS credentials; [transport] kind = 'ses' needs {CREDENTIAL_VARIABLES}, "
                "or AWS_PROFILE naming a profile in ~/.aws/credentials (or an instance role)",
            )
        config = BotoConfig(
            region_name=region,
            connect_timeout=timeout,
            read_timeout=timeout,
            # No retries inside botocore: its standard mode would retry a 429 (hiding the rate
            # limit from the run, which must record it and slow down) and a read timeout (which
            # could deliver a message twice: SendEmail has no idempotency key). The run retries
            # deferred rows itself, with backoff, and never retries unknown ones blindly.
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=max(concurrency, 10),  # one connection per worker, no waiting
            user_agent_appid="digest",
        )
        self._client = session.client("sesv2", endpoint_url=endpoint_url or None, config=config)

    def close(self) -> None:
        self._client.close()  # the connection pool; the client opens new ones if used again

    def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for i, outbound in enumerate(batch):
            outcome, stop = self._send(outbound)
            outcomes.append(outcome)
            if stop:
                # The rest would get the same answer: settle them untried, with the same result.
                note = (
                    f"not tried: an earlier message of its batch got {outcome.result.value}: {outcome.detail}"
                )
                rest = Result.DEFERRED if outcome.result is Result.UNKNOWN else outcome.result
                outcomes += [
                    Outcome(
                        o.key,
                        rest,
                        note,
                        retry_after=outcome.retry_after,
                        rate_limited=outcome.rate_limited,
                    )
                    for o in batch[i + 1 :]
                ]
                break
        return outcomes

    def _send(self, outbound: Outbound) -> tuple[Outcome, bool]:
        """One SendEmail; the outcome, and whether the rest of the batch should stop."""
        key = outbound.key
        try:
            wire = outbound.wire()  # spliced (and DKIM-signed) here, on the worker thread
        except Exception as err:  # noqa: BLE001  nothing was handed over: this message alone fails
            log.exception("cannot build the message for %s", outbound.recipient)
            return Outcome(key, Result.FAILED, f"could not build the message: {err!r}"), False
        request: dict[str, Any] = {
            "FromEmailAddress": outbound.envelope_sender,
            "Destination": {"ToAddresses": [outbound.recipient]},
            "Content": {"Raw": {"Data": wire}},
        }
        if "+" in outbound.envelope_sender.partition("@")[0]:
            # A VERP return path ([bounces] return_path_domain): SES keeps its own MAIL FROM, so
            # ask it to forward the bounce and complaint notifications there instead.
            request["FeedbackForwardingEmailAddress"] = outbound.envelope_sender
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        try:
            response = self._client.send_email(**request)
        except ClientError as err:
            return self._refusal(key, err)
        except BotoConnectionError as err:  # refused, DNS, connect timeout, TLS: nothing was sent
            return Outcome(key, Result.DEFERRED, f"cannot reach SES: {err}"), True
        except HTTPClientError as err:  # read timeout, connection dropped after the request went out
            return Outcome(key, Result.UNKNOWN, f"no answer from SES after sending: {err}"), True
        except ParamValidationError as err:  # botocore refused the request before sending it
            return Outcome(key, Result.FAILED, f"SES request not valid: {err}"), False
        except NoCredentialsError as err:
            return Outcome(key, Result.FAILED, f"no AWS credentials: {err}"), True
        except BotoCoreError as err:  # anything else may have happened after sending
            return Outcome(key, Result.UNKNOWN, f"SES request failed: {err!r}"), True
        message_id = str(response.get("MessageId", ""))
        return Outcome(key, Result.SENT, f"accepted by SES as {message_id}", provider_id=message_id), False

    def _refusal(self, key: str, err: ClientError) -> tuple[Outcome, bool]:
        error = err.response.get("Error", {})
        meta = err.response.get("ResponseMetadata", {})
        code = str(error.get("Code", "")) or "unknown error"
        status = int(meta.get("HTTPStatusCode") or 0)
        detail = f"SES {code} (HTTP {status}): {error.get('Message', '') or err}"
        if code in THROTTLING or status == 429:
            retry_after = _retry_after(meta.get("HTTPHeaders", {}))
            outcome = Outcome(key, Result.DEFERRED, detail, retry_after=retry_after, rate_limited=True)
            return outcome, True
        if code in ACCOUNT or status in (401, 403):
            detail = f"SES refused the account, not this message (fix it in SES, then resume): {detail}"
            log.error("%s", detail)
            return Outcome(key, Result.FAILED, detail), True
        if status >= 500:
            return Outcome(key, Result.DEFERRED, detail), True
        return Outcome(key, Result.FAILED, detail), False  # MessageRejected, BadRequest: this message
