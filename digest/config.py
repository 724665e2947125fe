"""digest.toml -> frozen dataclasses.

Every key has a default here, and the README documents each one. Loading rejects unknown
keys and wrong types with a one-line `ConfigError` naming the file and the key. Secrets never
live in the file: they come from environment variables (see `secret`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import ConfigError

DEFAULT_CONFIG_NAME = "digest.toml"
EMBEDDED = "<embedded defaults>"

DEFAULT_REGION_ORDER = (
    "Middle East",
    "Africa",
    "Asia-Pacific",
    "Europe",
    "Americas",
    "Global",
)

# Kinds of piece that sites put beside the section in a label ("Analysis | Middle East"): they
# are kept on the article as its format label and never taken for a region.
DEFAULT_FORMATS = (
    "Analysis",
    "Reporting",
    "News",
    "Opinion",
    "Commentary",
    "Interview",
    "Review",
    "Book Review",
    "Explainer",
    "Feature",
    "Essay",
    "Op-Ed",
    "Editorial",
    "Q&A",
    "Podcast",
    "Video",
)


@dataclass(frozen=True)
class NewsletterConfig:
    name: str = "Responsible Statecraft Weekly"
    sender: str = "Responsible Statecraft <newsletter@example.org>"
    reply_to: str = ""
    base_url: str = "https://newsletter.example.org"
    postal_address: str = "Quincy Institute, 1 Example Street, Washington, DC 20001, USA"
    timezone: str = "America/New_York"
    language: str = "en"
    list_id: str = ""  # default: "<slug of name>.<host of base_url>"
    unsubscribe_mailto: str = ""  # default: "unsubscribe@<domain of sender>"


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "rss"  # rss | sample | wordpress | files
    name: str = ""
    url: str = ""
    path: str = ""
    enrich: bool = False  # read the article page's OpenGraph / JSON-LD for a missing image, credit...
    max_pages: int = 10  # wordpress: pages of `per_page` posts read at most


@dataclass(frozen=True)
class RegionsConfig:
    order: tuple[str, ...] = DEFAULT_REGION_ORDER
    aliases: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "Middle East": ("MENA", "Mideast", "Middle-East", "Gulf"),
            "Asia-Pacific": ("Asia", "Asia Pacific", "APAC", "Indo-Pacific", "East Asia"),
            "Americas": ("Latin America", "North America", "South America", "US", "Washington"),
            "Europe": ("Russia", "Ukraine", "Eurasia"),
            "Global": ("World", "International"),
        }
    )
    fallback: str = ""  # section for articles with no known region; "" leaves them out
    ignore: tuple[str, ...] = ()  # sections (categories) whose articles are left out, e.g. "QIOSK"
    formats: tuple[str, ...] = DEFAULT_FORMATS  # "Analysis | Middle East": the format part of a label


@dataclass(frozen=True)
class CollectConfig:
    window_days: int = 7
    lede_length: int = 280
    title_length: int = 200  # titles, photo credits and alt text are cut at a word boundary to these
    # Real credits run to 275 (the seed's Trump/Xi photo); agency and photographer come last, so
    # a longer one is cut before them, never at its end.
    credit_length: int = 300
    alt_length: int = 150
    max_articles_per_region: int = 8
    window: str = "days"  # days: window_days before the run | since_last_send
    send_when_empty: bool = False  # send an issue even when no article was collected
    fetch_timeout: float = 20.0  # seconds, per request (connect, each read, and the whole body)
    fetch_max_bytes: int = 5_000_000  # size cap of one response body, after decompression
    fetch_allow: tuple[str, ...] = ()  # CIDRs, addresses or host names allowed though not public
    user_agent: str = ""  # default: "digest/<version> (+<newsletter base_url>)"
    cache_dir: str = ".digest-cache"  # ETag / Last-Modified cache for conditional GET; "" for none
    enrich_max_pages: int = 30  # article pages read per run for enrichment, at most


@dataclass(frozen=True)
class ScheduleConfig:
    """`digest run`'s scheduler. day/time/enabled/mode seed the schedule "weekly" once (see README)."""

    day: str = "fri"
    time: str = "09:00"
    enabled: bool = True  # false: the seeded "weekly" schedule starts paused
    mode: str = "send"  # mode of the seeded schedule: send | review
    # A firing later than this (server down, say) is recorded as missed and not sent late.
    misfire_grace_minutes: int = 60
    review_hours_before: float = 24.0  # review mode: the issue is prepared and staff told this early
    review_to: tuple[str, ...] = ()  # who gets the review mail; () -> the address of [newsletter] sender
    # Four-eyes: an approval counts only from someone other than the last editor of the curation.
    approver_must_differ: bool = False


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    username: str = ""
    security: str = "none"  # none | starttls | tls
    timeout: float = 30.0
    connections: int = 4  # the pool: batches in flight at once, one connection each
    max_messages_per_connection: int = 100  # then QUIT and reconnect: relays often cap it
    ca_file: str = ""  # PEM file of CA certificates to trust instead of the system's (private relays)


@dataclass(frozen=True)
class SendGridConfig:
    base_url: str = "https://api.sendgrid.com"  # a sandbox or a local server in tests
    timeout: float = 30.0  # seconds to connect, and for each read of the answer
    concurrency: int = 0  # requests in flight at once; 0: the transport's default (4)
    requests_per_second: float = 0.0  # 0: the provider's documented rate (none for SendGrid)


@dataclass(frozen=True)
class MailgunConfig:
    domain: str = ""  # the sending domain, as set up at Mailgun
    region: str = "us"  # us | eu: where the domain lives
    base_url: str = ""  # default: the region's API (https://api.mailgun.net, https://api.eu.mailgun.net)
    timeout: float = 30.0
    concurrency: int = 0  # 0: 8
    requests_per_second: float = 0.0  # 0: none (Mailgun's rate depends on the account)


@dataclass(frozen=True)
class PostmarkConfig:
    message_stream: str = "broadcast"  # Postmark's stream for bulk mail
    base_url: str = "https://api.postmarkapp.com"
    timeout: float = 30.0
    concurrency: int = 0  # 0: 4
    requests_per_second: float = 0.0  # 0: none documented


@dataclass(frozen=True)
class ResendConfig:
    base_url: str = "https://api.resend.com"
    timeout: float = 30.0
    concurrency: int = 0  # 0: 2
    requests_per_second: float = 0.0  # 0: Resend's default of 2 per second per team


@dataclass(frozen=True)
class SesConfig:
    """Amazon SES v2 through boto3; credentials come from boto3's own chain (AWS_* variables)."""

    region: str = "us-east-1"
    endpoint_url: str = ""  # "": AWS's endpoint for `region`; a local server (moto) in tests
    configuration_set: str = ""  # sent as ConfigurationSetName when set (event publishing, IP pools)
    timeout: float = 30.0  # seconds to connect, and to wait for SES's answer
    concurrency: int = 8  # SendEmail requests in flight at once (one botocore connection each)
    max_per_second: float = 14.0  # SES's default "maximum send rate" once out of the sandbox


@dataclass(frozen=True)
class TransportConfig:
    kind: str = "outbox"  # outbox | smtp | sendgrid | mailgun | postmark | ses | resend
    outbox_dir: str = "outbox"
    attempts: int = 3  # tries per message for temporary failures (4xx, 429, dropped connection)
    backoff_seconds: float = 1.0  # wait before the 2nd try; doubles each time, with jitter
    max_errors: int = 50  # a run pauses itself past this many failed deliveries
    resume_max_age_hours: float = 48.0  # an older unfinished run is not resumed without --resume-stale
    max_per_second: float = 0.0  # messages per second for the whole run; 0: no limit of ours
    max_per_hour: int = 0  # messages per hour (over every run); 0: no limit
    batch_size: int = 200  # ledger rows claimed per batch (one committed UPDATE each)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    sendgrid: SendGridConfig = field(default_factory=SendGridConfig)
    mailgun: MailgunConfig = field(default_factory=MailgunConfig)
    postmark: PostmarkConfig = field(default_factory=PostmarkConfig)
    resend: ResendConfig = field(default_factory=ResendConfig)
    ses: SesConfig = field(default_factory=SesConfig)


@dataclass(frozen=True)
class SendConfig:
    workers: str = "inprocess"  # inprocess | celery (workers on several machines, see [celery])
    # A run whose owner was not heard from for this long is taken over by another process.
    lease_seconds: float = 60.0


@dataclass(frozen=True)
class CeleryConfig:
    broker_url: str = ""  # amqp://... or redis://...; DIGEST_CELERY_BROKER_URL overrides it
    queue: str = "digest"  # the Celery queue the send tasks go on
    task_rows: int = 500  # ledger rows per task (one id range each)
    claim_rows: int = 100  # rows a worker claims in one statement (fewer statements per message)
    handover_rows: int = 20  # rows per hand-over; a dead worker leaves <= connections x this unknown
    worker_lease_seconds: float = 30.0  # a worker not heard from for this long is dead
    visibility_timeout: int = 3600  # Redis only: seconds before a dead worker's task is delivered again


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///digest.db"


@dataclass(frozen=True)
class TemplatesConfig:
    folder: str = ""  # staff-owned folder whose files override the bundled templates one by one


@dataclass(frozen=True)
class WebConfig:
    """`digest serve`: the subscriber pages (subscribe, confirm, preferences, unsubscribe)."""

    host: str = "127.0.0.1"
    port: int = 8080
    primary_color: str = "#1d3557"  # page header and buttons; white text sits on it
    accent_color: str = "#b5322e"  # links and focus rings
    # Confirmation mails to one mailbox (all its +tag variants and case spellings) per window.
    confirm_limit_per_mailbox: int = 2
    confirm_window_hours: int = 24
    subscribe_limit_per_client: int = 10  # subscribe attempts from one client address per window
    rate_window_minutes: int = 60  # the window of subscribe_limit_per_client
    limiter_url: str = ""  # where per-client counts live: "" = this process's memory, or redis://...
    trusted_proxies: int = 0  # reverse proxies in front whose X-Forwarded-For to trust
    archive_dir: str = "archive"  # web editions of sent issues ("view in browser"), one file per issue
    # Sites whose pages may carry the embedded sign-up form (POST /subscribe/embed), as origins
    # like "https://responsiblestatecraft.org"; our own base_url's origin is always allowed.
    embed_origins: tuple[str, ...] = ()
    embed_min_seconds: int = 3  # an embedded form sent sooner after it was shown is taken for a bot
    staff_login_limit: str = "10 per minute"  # staff login attempts per client address (Flask-Limiter)
    # Wrong passwords for one account from one address before each further try waits (1 s, 2 s,
    # 4 s, ... up to staff_login_max_delay_seconds); nothing ever locks the right password out.
    staff_login_free_failures: int = 5
    staff_login_max_delay_seconds: int = 300
    staff_require_2fa: bool = False  # admins must turn on a second factor (TOTP) before anything else
    staff_session_hours: float = 12.0  # a staff login lasts this long, then asks again


@dataclass(frozen=True)
class RenderConfig:
    max_html_bytes: int = 102_000  # Gmail clips larger HTML, hiding the footer and its unsubscribe link
    oversize_max_per_region: int = 0  # cap per region when the HTML is too big; 0: largest that fits


@dataclass(frozen=True)
class DkimConfig:
    """Our own DKIM signature on MIME-bytes transports (digest/dkim.py)."""

    enabled: bool = False
    domain: str = ""  # d=: the signing domain, normally the From address's domain (DMARC alignment)
    selector: str = ""  # s=: the key is published at <selector>._domainkey.<domain>
    key_file: str = ""  # PEM private key, relative to digest.toml; else DIGEST_DKIM_PRIVATE_KEY
    # A second signature, Ed25519-SHA256 (RFC 8463), beside the RSA one: its PEM key and selector.
    ed25519_key_file: str = ""
    ed25519_selector: str = ""


@dataclass(frozen=True)
class BouncesConfig:
    """Bounce and complaint handling: the policy, and the mailbox `digest bounces fetch` reads."""

    soft_limit: int = 3  # soft bounces (in distinct runs) that suppress an address...
    soft_window_days: int = 30  # ...within this many days
    # "pop3s://HOST[:PORT]", "imaps://HOST[:PORT][/FOLDER]", "maildir:PATH" or "mbox:PATH"; "" = none
    mailbox: str = ""
    username: str = ""  # POP3 or IMAP user; the password is DIGEST_BOUNCES_PASSWORD
    processed_folder: str = "digest-processed"  # IMAP: where processed reports are moved
    unreadable_folder: str = "digest-unreadable"  # IMAP: where messages that cannot be read are moved
    max_message_bytes: int = 10_000_000  # a larger message is set aside unread, with a warning
    # VERP: each message's envelope sender is bounces+RUN.SUBSCRIBER.SIGNATURE@ this domain; "" = off
    return_path_domain: str = ""
    ca_file: str = ""  # PEM file of CAs to trust besides the system's (a private mail server)
    timeout: float = 30.0
    webhook_max_age_seconds: int = 300  # signed webhook requests older (or newer) than this are refused
    # SNS topics whose SES notifications are accepted; () = any, but then no subscription is confirmed
    ses_topic_arns: tuple[str, ...] = ()
    # Refused webhook requests (bad signature or credentials) per client address before a 429
    webhook_failure_limit: str = "10 per 10 minutes"


@dataclass(frozen=True)
class AnalyticsConfig:
    """Per-story click counts (digest/story_links.py, digest/clicks.py); never per reader."""

    enabled: bool = True  # story links go through <base_url>/r/<token>; false: direct article links
    opens: bool = False  # a 1x1 pixel per variant; inflated by privacy proxies, so off by default
    utm_source: str = ""  # added to the article URL on redirect when set, e.g. "newsletter"
    utm_medium: str = ""  # e.g. "email"
    utm_campaign: str = ""  # "{issue}" in it becomes the issue date, e.g. "digest-{issue}"
    burst_links: int = 4  # distinct links of one message from one client within burst_seconds...
    burst_seconds: float = 5.0  # ...mark that client as a scanner
    client_memory_minutes: float = 10.0  # how long a client's recent clicks are remembered (memory only)
    flush_seconds: float = 5.0  # counts are written to the database at most this late
    per_reader: bool = False  # also record which subscriber clicked which story (personal data!)


@dataclass(frozen=True)
class Config:
    newsletter: NewsletterConfig = field(default_factory=NewsletterConfig)
    sources: tuple[SourceConfig, ...] = (SourceConfig(kind="sample", name="Sample feed"),)
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    send: SendConfig = field(default_factory=SendConfig)
    celery: CeleryConfig = field(default_factory=CeleryConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    web: WebConfig = field(default_factory=WebConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    path: str = EMBEDDED  # where it was loaded from; relative paths in the file resolve against it

    @property
    def base_dir(self) -> Path:
        return Path.cwd() if self.path == EMBEDDED else Path(self.path).resolve().parent

    def resolve_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.newsletter.timezone)

    @property
    def sender_domain(self) -> str:
        return _domain_of(self.newsletter.sender)

    @property
    def list_id(self) -> str:
        if self.newsletter.list_id:
            return self.newsletter.list_id
        slug = re.sub(r"[^a-z0-9]+", "-", self.newsletter.name.lower()).strip("-") or "digest"
        host = re.sub(r"^[a-z]+://", "", self.newsletter.base_url).split("/")[0].split(":")[0]
        return f"{slug}.{host or self.sender_domain}"

    @property
    def unsubscribe_mailto(self) -> str:
        return self.newsletter.unsubscribe_mailto or f"unsubscribe@{self.sender_domain}"


def _domain_of(address: str) -> str:
    m = re.search(r"@([^>\s]+)", address)
    return m.group(1) if m else "localhost"


def secret(name: str, *, required_by: str = "") -> str:
    """A secret from the environment (DIGEST_<NAME>); never from digest.toml."""
    var = f"DIGEST_{name.upper()}"
    value = os.environ.get(var, "")
    if not value and required_by:
        raise ConfigError("environment", var, f"is not set; {required_by} needs it")
    return value


# --- loading -----------------------------------------------------------------------------

_CHOICES: dict[str, tuple[str, ...]] = {
    "sources.kind": ("rss", "sample", "wordpress", "files"),
    "collect.window": ("days", "since_last_send"),
    "transport.kind": ("outbox", "smtp", "sendgrid", "mailgun", "postmark", "ses", "resend"),
    "transport.mailgun.region": ("us", "eu"),
    "send.workers": ("inprocess", "celery"),
    "transport.smtp.security": ("none", "starttls", "tls"),
    "schedule.day": ("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
    "schedule.mode": ("send", "review"),
}


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load digest.toml.

    With no path: DIGEST_CONFIG, else ./digest.toml if present, else the embedded defaults
    (the bundled sample feed, SQLite, the outbox transport). A path that was asked for and
    is missing is an error.
    """
    if path is None:
        env = os.environ.get("DIGEST_CONFIG")
        if env:
            path = env
        elif Path(DEFAULT_CONFIG_NAME).is_file():
            path = DEFAULT_CONFIG_NAME
        else:
            return Config()
    file = str(path)
    try:
        raw = Path(file).read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, None, "file not found") from None
    except OSError as err:
        raise ConfigError(file, None, f"cannot read: {err.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(file, None, f"not valid TOML: {err}") from None
    _check_retired(data, file)
    config = _build(Config, data, file, "", skip={"path"})
    config = dataclasses.replace(config, path=file)
    validate(config)
    return config


# Keys that existed once, with what replaced them: an old digest.toml gets told what to write.
RETIRED_KEYS = {
    ("web", "confirm_limit_per_address"): (
        "was replaced by confirm_limit_per_mailbox (default 2) and confirm_window_hours (default 24), "
        "which count every +tag variant and case spelling of a mailbox together"
    ),
    ("web", "staff_max_failed_logins"): (
        "was replaced by staff_login_free_failures (default 5): wrong passwords now slow the "
        "address that sends them (growing waits) instead of locking the account for its owner too"
    ),
    ("web", "staff_lockout_minutes"): (
        "was replaced by staff_login_max_delay_seconds (default 300), the longest wait between "
        "tries after wrong passwords; accounts are no longer locked"
    ),
}


def _check_retired(data: dict[str, Any], file: str) -> None:
    for (section, key), message in RETIRED_KEYS.items():
        table = data.get(section)
        if isinstance(table, dict) and key in table:
            raise ConfigError(file, f"[{section}] {key}", message)


def config_from_dict(data: dict[str, Any], file: str = EMBEDDED) -> Config:
    """Build a Config from already-parsed TOML data (tests, embedded setups)."""
    _check_retired(data, file)
    config = dataclasses.replace(_build(Config, data, file, "", skip={"path"}), path=file)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Checks that span keys or need more than a type."""
    file = config.path
    try:
        ZoneInfo(config.newsletter.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            file, "[newsletter] timezone", f"unknown time zone {config.newsletter.timezone!r}"
        ) from None
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", config.newsletter.base_url):
        raise ConfigError(file, "[newsletter] base_url", "must be an http(s) URL")
    for key in ("sender", "reply_to", "unsubscribe_mailto"):
        # These go into headers of every message: a stray CR/LF or '>' would forge headers.
        value = getattr(config.newsletter, key).strip()
        if not value and key != "sender":
            continue
        if "\r" in value or "\n" in value:
            raise ConfigError(file, f"[newsletter] {key}", "must be on one line")
        address = parseaddr(value)[1]
        named = key != "unsubscribe_mailto" and value.endswith(f"<{address}>")  # "Name <address>"
        if not _ADDRESS.fullmatch(address) or not (value == address or named):
            raise ConfigError(file, f"[newsletter] {key}", f"must be an e-mail address, not {value!r}")
    _validate_database_url(config)
    _validate_smtp(config)
    if config.transport.resume_max_age_hours <= 0:
        raise ConfigError(file, "[transport] resume_max_age_hours", "must be a positive number")
    if config.collect.window_days > 366:
        raise ConfigError(file, "[collect] window_days", "must be at most 366")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", config.schedule.time):
        raise ConfigError(file, "[schedule] time", "must be HH:MM (24-hour)")
    _validate_schedule(config)
    if not config.regions.order:
        raise ConfigError(file, "[regions] order", "must name at least one region")
    for region in config.regions.aliases:
        if region not in config.regions.order:
            raise ConfigError(file, f"[regions.aliases] {region}", "is not in [regions] order")
    if config.regions.fallback and config.regions.fallback not in config.regions.order:
        raise ConfigError(file, "[regions] fallback", "must be '' or a region in [regions] order")
    region_names = {_label_key(r): r for r in config.regions.order}
    for region, names in config.regions.aliases.items():
        region_names.update((_label_key(n), region) for n in names)
    for name in config.regions.formats:
        if not _label_key(name):
            raise ConfigError(file, "[regions] formats", f"{name!r} has no letters or digits")
        region = region_names.get(_label_key(name))
        if region:
            raise ConfigError(file, "[regions] formats", f"{name!r} is also a name of the region {region!r}")
    for i, src in enumerate(config.sources):
        if src.kind in ("rss", "wordpress") and not (src.url or src.path):
            raise ConfigError(file, f"[[sources]] #{i + 1} url", f"a {src.kind} source needs url or path")
        if src.kind == "files" and not src.path:
            raise ConfigError(file, f"[[sources]] #{i + 1} path", "a files source needs path")
    for name in ("window_days", "lede_length", "max_articles_per_region", "fetch_timeout", "fetch_max_bytes"):
        if getattr(config.collect, name) <= 0:
            raise ConfigError(file, f"[collect] {name}", "must be a positive number")
    for name in ("title_length", "credit_length", "alt_length"):
        # Room for a few words and the "…"; an upper bound keeps the e-mail under Gmail's clip.
        if not 20 <= getattr(config.collect, name) <= 1000:
            raise ConfigError(file, f"[collect] {name}", "must be between 20 and 1000 characters")
    if config.transport.max_per_second < 0:
        raise ConfigError(file, "[transport] max_per_second", "must be 0 (no limit) or more")
    if config.transport.max_per_hour < 0:
        raise ConfigError(file, "[transport] max_per_hour", "must be 0 (no limit) or more")
    if not 1 <= config.transport.batch_size <= 10000:
        raise ConfigError(file, "[transport] batch_size", "must be between 1 and 10000")
    if config.transport.attempts < 1:
        raise ConfigError(file, "[transport] attempts", "must be at least 1")
    if config.transport.backoff_seconds < 0:
        raise ConfigError(file, "[transport] backoff_seconds", "must not be negative")
    if config.collect.enrich_max_pages < 0:
        raise ConfigError(file, "[collect] enrich_max_pages", "must be 0 or more")
    for entry in config.collect.fetch_allow:
        if not re.fullmatch(r"[0-9A-Za-z.:/_-]+", entry):
            raise ConfigError(file, "[collect] fetch_allow", f"{entry!r} is not a CIDR, address or host name")
    for i, src in enumerate(config.sources):
        if src.max_pages <= 0:
            raise ConfigError(file, f"[[sources]] #{i + 1} max_pages", "must be a positive number")
    _validate_celery(config)
    _validate_web(config)
    _validate_analytics(config)
    _validate_render(config)
    _validate_providers(config)
    _validate_ses(config)
    _validate_dkim(config)
    _validate_bounces(config)


def _validate_smtp(config: Config) -> None:
    file, smtp = config.path, config.transport.smtp
    if not 1 <= smtp.port <= 65535:
        raise ConfigError(file, "[transport.smtp] port", "must be between 1 and 65535")
    if smtp.timeout <= 0:
        raise ConfigError(file, "[transport.smtp] timeout", "must be a positive number")
    if not 1 <= smtp.connections <= 100:
        raise ConfigError(file, "[transport.smtp] connections", "must be between 1 and 100")
    if smtp.max_messages_per_connection < 1:
        raise ConfigError(file, "[transport.smtp] max_messages_per_connection", "must be at least 1")
    if smtp.ca_file and not config.resolve_path(smtp.ca_file).is_file():
        raise ConfigError(
            file, "[transport.smtp] ca_file", f"no such file: {config.resolve_path(smtp.ca_file)}"
        )
    if smtp.username and smtp.security == "none" and not _is_loopback(smtp.host):
        raise ConfigError(
            file,
            "[transport.smtp] security",
            f"must be starttls or tls when username is set: the password would cross the network to "
            f"{smtp.host} in the clear (only a loopback host may use none)",
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _label_key(label: str) -> str:
    """How labels are compared (as `digest.collect` does): case and punctuation ignored."""
    return re.sub(r"[\W_]+", "", label.casefold())


# pop3s://HOST[:PORT] | imaps://HOST[:PORT][/FOLDER] | maildir:PATH | mbox:PATH
MAILBOX_RE = re.compile(r"(pop3s|imaps)://([^/:\s]+)(?::(\d{1,5}))?(?:/(\S*))?|(maildir|mbox):(.+)")


def _validate_bounces(config: Config) -> None:
    file, b = config.path, config.bounces
    for name in ("soft_limit", "soft_window_days", "webhook_max_age_seconds", "max_message_bytes"):
        if getattr(b, name) <= 0:
            raise ConfigError(file, f"[bounces] {name}", "must be a positive number")
    if b.timeout <= 0:
        raise ConfigError(file, "[bounces] timeout", "must be a positive number")
    if b.return_path_domain and not _DOMAIN_RE.fullmatch(b.return_path_domain):
        raise ConfigError(
            file,
            "[bounces] return_path_domain",
            f"{b.return_path_domain!r} is not a domain name (news.example.org)",
        )
    if b.mailbox and not MAILBOX_RE.fullmatch(b.mailbox):
        raise ConfigError(
            file,
            "[bounces] mailbox",
            f"{b.mailbox!r} is not pop3s://HOST[:PORT], imaps://HOST[:PORT][/FOLDER], "
            "maildir:PATH or mbox:PATH",
        )
    _check_limit(file, "[bounces] webhook_failure_limit", b.webhook_failure_limit)


# The limit strings shipped as defaults (tests/test_console_data.py parses each with `limits`).
# Only a value set away from them is parsed here: importing `limits` costs every command ~15 ms.
DEFAULT_LIMITS = frozenset({"10 per minute", "10 per 10 minutes"})


def _check_limit(file: Any, key: str, value: str) -> None:
    """A Flask-Limiter limit string like '10 per minute' (several may be joined by ';')."""
    if value in DEFAULT_LIMITS:
        return
    from limits import parse_many

    try:
        if not parse_many(value):
            raise ValueError("empty")
    except ValueError:
        raise ConfigError(file, key, f"{value!r} is not a limit like '10 per minute'") from None


_DOMAIN_RE = re.compile(r"(?i)(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_ADDRESS = re.compile(r"[^\s<>@,;:\"()\[\]\\]+@[^\s<>@,;:\"()\[\]\\]+\.[^\s<>@,;:\"()\[\]\\]+")


def _validate_database_url(config: Config) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    url = config.database.url
    try:
        make_url(url).get_dialect()  # parses the URL and loads its dialect: a typo fails here
    except NoSuchModuleError as err:  # before ArgumentError, its base class
        raise ConfigError(config.path, "[database] url", f"no database driver for it: {err}") from None
    except ArgumentError:
        raise ConfigError(
            config.path,
            "[database] url",
            f"{url!r} is not a database URL (e.g. sqlite:///digest.db or postgresql+psycopg://user@host/db)",
        ) from None


def _validate_celery(config: Config) -> None:
    file, c = config.path, config.celery
    for name in ("task_rows", "claim_rows", "handover_rows", "visibility_timeout"):
        if getattr(c, name) < 1:
            raise ConfigError(file, f"[celery] {name}", "must be at least 1")
    if c.worker_lease_seconds < 2:
        raise ConfigError(file, "[celery] worker_lease_seconds", "must be at least 2")
    if not 2 <= config.send.lease_seconds <= 3600:
        raise ConfigError(file, "[send] lease_seconds", "must be between 2 and 3600")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", c.queue):
        raise ConfigError(file, "[celery] queue", f"{c.queue!r} is not a queue name (letters, digits, _.:-)")
    if c.broker_url and not re.match(r"(amqp|amqps|pyamqp|redis|rediss)://", c.broker_url):
        raise ConfigError(file, "[celery] broker_url", "must be an amqp:// (RabbitMQ) or redis:// URL")
    if config.send.workers == "celery":
        from sqlalchemy.engine import make_url

        backend = make_url(config.database.url).get_backend_name()
        if backend != "postgresql":
            raise ConfigError(
                file,
                "[database] url",
                f'must be a PostgreSQL URL with [send] workers = "celery" (workers on other machines '
                f"share the ledger and lock its rows), not {backend}",
            )
        if not c.broker_url and not os.environ.get("DIGEST_CELERY_BROKER_URL"):
            raise ConfigError(file, "[celery] broker_url", 'is needed with [send] workers = "celery"')


def _validate_web(config: Config) -> None:
    file, web = config.path, config.web
    for name in ("primary_color", "accent_color"):
        # The value goes into the pages' CSS: only a plain hex colour may pass.
        if not re.fullmatch(r"#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6}", getattr(web, name)):
            raise ConfigError(file, f"[web] {name}", "must be a hex colour like #1d3557")
    if not 0 <= web.port <= 65535:
        raise ConfigError(file, "[web] port", "must be between 0 and 65535")
    for name in (
        "confirm_limit_per_mailbox",
        "confirm_window_hours",
        "subscribe_limit_per_client",
        "rate_window_minutes",
    ):
        if getattr(web, name) <= 0:
            raise ConfigError(file, f"[web] {name}", "must be a positive number")
    if web.trusted_proxies < 0:
        raise ConfigError(file, "[web] trusted_proxies", "must be 0 or more")
    if web.limiter_url and not re.fullmatch(r"(memory|rediss?|redis\+unix)://\S*", web.limiter_url):
        raise ConfigError(
            file,
            "[web] limiter_url",
            "must be '' (memory), memory:// or a redis:// URL like redis://127.0.0.1:6379/0",
        )
    for origin in web.embed_origins:
        if not re.fullmatch(r"https?://[a-z0-9.-]+(:\d{1,5})?", origin):
            raise ConfigError(
                file,
                "[web] embed_origins",
                f'{origin!r} is not an origin like "https://example.org" (scheme and host, '
                "lower case, no path or trailing slash)",
            )
    if web.embed_min_seconds < 0:
        raise ConfigError(file, "[web] embed_min_seconds", "must be 0 or more")
    _check_limit(file, "[web] staff_login_limit", web.staff_login_limit)
    for name in ("staff_login_free_failures", "staff_login_max_delay_seconds", "staff_session_hours"):
        if getattr(web, name) <= 0:
            raise ConfigError(file, f"[web] {name}", "must be a positive number")


PROVIDER_KINDS = ("sendgrid", "mailgun", "postmark", "resend")


def _validate_providers(config: Config) -> None:
    file = config.path
    for kind in PROVIDER_KINDS:
        section = getattr(config.transport, kind)
        where = f"[transport.{kind}]"
        if section.base_url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", section.base_url):
            raise ConfigError(file, f"{where} base_url", "must be an http(s) URL")
        if section.timeout <= 0:
            raise ConfigError(file, f"{where} timeout", "must be a positive number")
        if section.concurrency < 0:
            raise ConfigError(file, f"{where} concurrency", "must be 0 (the provider's default) or more")
        if section.requests_per_second < 0:
            raise ConfigError(file, f"{where} requests_per_second", "must be 0 (the provider's) or more")
    if config.transport.kind == "mailgun" and not config.transport.mailgun.domain.strip():
        raise ConfigError(file, "[transport.mailgun] domain", 'is needed with [transport] kind = "mailgun"')
    if not config.transport.postmark.message_stream.strip():
        raise ConfigError(file, "[transport.postmark] message_stream", "must not be empty")


def _validate_schedule(config: Config) -> None:
    file, schedule = config.path, config.schedule
    if not 1 <= schedule.misfire_grace_minutes <= 7 * 24 * 60:
        raise ConfigError(file, "[schedule] misfire_grace_minutes", "must be between 1 and 10080 (a week)")
    if not 0 < schedule.review_hours_before <= 7 * 24:
        raise ConfigError(file, "[schedule] review_hours_before", "must be more than 0 and at most 168")
    for address in schedule.review_to:
        if "\r" in address or "\n" in address or not _ADDRESS.fullmatch(address.strip()):
            raise ConfigError(file, "[schedule] review_to", f"{address!r} is not an e-mail address")


def _validate_render(config: Config) -> None:
    file = config.path
    if config.render.max_html_bytes <= 0:
        raise ConfigError(file, "[render] max_html_bytes", "must be a positive number")
    if config.render.oversize_max_per_region < 0:
        raise ConfigError(file, "[render] oversize_max_per_region", "must be 0 (automatic) or more")


def _validate_ses(config: Config) -> None:
    file, ses = config.path, config.transport.ses
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", ses.region):
        raise ConfigError(
            file, "[transport.ses] region", f"must be an AWS region like us-east-1, not {ses.region!r}"
        )
    if ses.endpoint_url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", ses.endpoint_url):
        raise ConfigError(file, "[transport.ses] endpoint_url", "must be '' (AWS) or an http(s) URL")
    if ses.timeout <= 0:
        raise ConfigError(file, "[transport.ses] timeout", "must be a positive number")
    if not 1 <= ses.concurrency <= 64:
        raise ConfigError(file, "[transport.ses] concurrency", "must be between 1 and 64")
    if ses.max_per_second <= 0:
        raise ConfigError(file, "[transport.ses] max_per_second", "must be a positive number")


# A DNS label or several (selector), a host name (domain): what goes into the DKIM-Signature tags.
_DNS_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _validate_analytics(config: Config) -> None:
    file, a = config.path, config.analytics
    if a.burst_links < 2:
        raise ConfigError(
            file, "[analytics] burst_links", "must be 2 or more (one link is what a person follows)"
        )
    for key in ("burst_seconds", "client_memory_minutes", "flush_seconds"):
        if getattr(a, key) <= 0:
            raise ConfigError(file, f"[analytics] {key}", "must be more than 0")
    for key in ("utm_source", "utm_medium", "utm_campaign"):
        if len(getattr(a, key)) > 100:
            raise ConfigError(file, f"[analytics] {key}", "must be at most 100 characters")


def _validate_dkim(config: Config) -> None:
    """Names and presence only; the key itself is read and checked by `digest.dkim.make_signer`."""
    file, dkim = config.path, config.dkim
    for key in ("domain", "selector"):
        value = getattr(dkim, key)
        if dkim.enabled and not value:
            raise ConfigError(file, f"[dkim] {key}", "must be set when [dkim] enabled = true")
        if value and not _DNS_NAME.fullmatch(value):
            raise ConfigError(file, f"[dkim] {key}", f"must be a DNS name, not {value!r}")
    if dkim.ed25519_selector and not _DNS_NAME.fullmatch(dkim.ed25519_selector):
        raise ConfigError(
            file, "[dkim] ed25519_selector", f"must be a DNS name, not {dkim.ed25519_selector!r}"
        )
    if dkim.ed25519_key_file and not dkim.ed25519_selector:
        raise ConfigError(
            file, "[dkim] ed25519_selector", "must be set with [dkim] ed25519_key_file (its own DNS record)"
        )
    if dkim.ed25519_key_file and dkim.ed25519_selector == dkim.selector:
        raise ConfigError(
            file, "[dkim] ed25519_selector", "must differ from [dkim] selector: each key has its own record"
        )


def _label(prefix: str, key: str) -> str:
    return f"[{prefix}] {key}" if prefix else key


def _build(cls: type, data: Any, file: str, prefix: str, skip: set[str] = frozenset()) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(file, f"[{prefix}]" if prefix else None, "must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, _label(prefix, key), f"unknown key (known keys: {known})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, file, prefix, name)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, file: str, prefix: str, key: str) -> Any:
    label = _label(prefix, key)
    dotted = f"{prefix}.{key}" if prefix else key
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, dotted)
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(file, label, f"must be a list, not {_tname(value)}")
        if dataclasses.is_dataclass(item_type):
            items = []
            for i, v in enumerate(value):
                items.append(_build(item_type, v, file, f"{dotted}#{i + 1}"))
            return tuple(items)
        return tuple(_convert(item_type, v, file, prefix, key) for v in value)
    if origin is dict:
        _k, val_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(file, label, f"must be a table, not {_tname(value)}")
        return {str(k): _convert(val_type, v, file, dotted, str(k)) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, label, f"must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, label, f"must be a whole number, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(file, label, f"must be a finite number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(file, label, f"must be a string, not {_tname(value)}")
        choices = _CHOICES.get(re.sub(r"#\d+", "", dotted))
        if choices and value not in choices:
            raise ConfigError(file, label, f"must be one of {', '.join(choices)}, not {value!r}")
        return value
    return value


def _tname(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string"}.get(type(value), type(value).__name__)
