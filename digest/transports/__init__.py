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
    raise ValueError(f"unknown transport kind {kind!r}")  # config validation makes this unreachable


__all__ = ["Transport", "make_transport"]
