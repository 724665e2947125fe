"""Transports hand finished message bytes to something that delivers them. One module per kind."""

from __future__ import annotations

from digest.config import Config
from digest.transports.base import Transport


def make_transport(config: Config) -> Transport:
    """The transport named in `[transport] kind`."""
    kind = config.transport.kind
    if kind == "outbox":
        from digest.transports.outbox import OutboxTransport

        return OutboxTransport(config.resolve_path(config.transport.outbox_dir))
    if kind == "smtp":
        from digest.config import secret
        from digest.transports.smtp import SmtpTransport

        smtp = config.transport.smtp
        return SmtpTransport(
            host=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=secret("smtp_password", required_by="[transport.smtp] username")
            if smtp.username
            else "",
            security=smtp.security,
            timeout=smtp.timeout,
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
