"""Transports hand finished message bytes to something that delivers them. One module per kind."""

from __future__ import annotations

from typing import Any

from digest.config import Config, secret
from digest.transports.base import Transport


def _http_options(section: Any) -> dict[str, Any]:
    """The keys every `[transport.<provider>]` section shares, as HttpTransport arguments."""
    return {
        "base_url": section.base_url,
        "timeout": section.timeout,
        "concurrency": section.concurrency or None,
        "requests_per_second": section.requests_per_second or None,
    }


def make_transport(config: Config) -> Transport:
    """The transport named in `[transport] kind`."""
    kind = config.transport.kind
    if kind == "outbox":
        from digest.transports.outbox import OutboxTransport

        return OutboxTransport(config.resolve_path(config.transport.outbox_dir))
    if kind == "smtp":
        from digest.errors import ConfigError
        from digest.transports.smtp import SmtpTransport

        smtp = config.transport.smtp
        try:
            return SmtpTransport(
                host=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=secret("smtp_password", required_by="[transport.smtp] username")
                if smtp.username
                else "",
                security=smtp.security,
                timeout=smtp.timeout,
                connections=smtp.connections,
                max_messages_per_connection=smtp.max_messages_per_connection,
                ca_file=config.resolve_path(smtp.ca_file) if smtp.ca_file else "",
            )
        except ValueError as err:  # the CA file is not PEM certificates
            raise ConfigError(config.path, "[transport.smtp] ca_file", str(err)) from err
    needs = f'[transport] kind = "{kind}"'
    if kind == "sendgrid":
        from digest.transports.sendgrid import SendGridTransport

        return SendGridTransport(
            api_key=secret("sendgrid_api_key", required_by=needs), **_http_options(config.transport.sendgrid)
        )
    if kind == "mailgun":
        from digest.transports.mailgun import MailgunTransport

        mailgun = config.transport.mailgun
        return MailgunTransport(
            api_key=secret("mailgun_api_key", required_by=needs),
            domain=mailgun.domain,
            region=mailgun.region,
            **_http_options(mailgun),
        )
    if kind == "postmark":
        from digest.transports.postmark import PostmarkTransport

        postmark = config.transport.postmark
        return PostmarkTransport(
            server_token=secret("postmark_server_token", required_by=needs),
            message_stream=postmark.message_stream,
            **_http_options(postmark),
        )
    if kind == "resend":
        from digest.transports.resend import ResendTransport

        return ResendTransport(
            api_key=secret("resend_api_key", required_by=needs), **_http_options(config.transport.resend)
        )
    if kind == "ses":
        from digest.transports.ses import SesTransport

        ses = config.transport.ses
        return SesTransport(
            region=ses.region,
            endpoint_url=ses.endpoint_url,
            configuration_set=ses.configuration_set,
            timeout=ses.timeout,
            concurrency=ses.concurrency,
            max_per_second=ses.max_per_second,
        )
    raise ValueError(f"unknown transport kind {kind!r}")  # config validation makes this unreachable


__all__ = ["Transport", "make_transport"]
