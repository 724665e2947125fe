"""Import and export subscribers as CSV.

Import understands our own export and the column names of Mailchimp and listmonk exports:

- address: `email`, `Email Address` (Mailchimp), `E-mail`
- name: `name`, or Mailchimp's `First Name` + `Last Name` (`FNAME`/`LNAME`)
- status: `status`, `Member Status`; Mailchimp's per-file exports are recognised by their
  `UNSUB_TIME` (unsubscribed) and `CLEAN_TIME` (cleaned = bounced) columns
- regions: `regions`, `tags`/`TAGS` (Mailchimp), or listmonk's `attributes` JSON `{"regions": [...]}`
- `paused`, `created_at` (`OPTIN_TIME`, `created_at` in listmonk) when present

Our export carries the suppression list too, in the same file: a subscriber's row names its
suppression reason in the `suppression` column, and each suppression with no subscriber row
(an erased address, kept only as `sha256:<hex>`) follows as a row with status `suppressed`.

Rules: a bad row is reported with its line number and skipped; the others go on, and that
includes a row that is not valid UTF-8 (`import_bytes` decodes per record). An import never
turns an unsubscribed, bounced or complained (or suppressed, or erased) address back into a
subscriber, but does apply an unsubscribe/bounce/complaint or suppression it brings. An
address whose hash is on the list as erased is not stored again at all. For an address
already in the store it changes only the status, and only in that direction, so running the
same file twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy.orm import Session

from subscribers import store
from subscribers.store import SUPPRESSING, Status
from subscribers.validate import (
    InputError,
    check_regions,
    clean_name,
    email_key,
    is_erased_key,
    normalize_email,
    split_regions,
)

EXPORT_COLUMNS = ("email", "name", "status", "regions", "paused", "source", "created_at", "suppression")

# The status of a row that is a suppression only (no subscriber): an erased address or one
# suppressed without a subscriber row. Its email cell is the address or `sha256:<hex>`.
SUPPRESSED = "suppressed"

# Spellings of each status in the tools people migrate from -> ours.
STATUS_ALIASES: dict[str, Status] = {
    "": Status.ACTIVE,
    "active": Status.ACTIVE,
    "subscribed": Status.ACTIVE,  # Mailchimp
    "confirmed": Status.ACTIVE,  # listmonk subscription status
    "enabled": Status.ACTIVE,  # listmonk subscriber status
    "pending": Status.PENDING,  # Mailchimp
    "unconfirmed": Status.PENDING,  # listmonk
    "unsubscribed": Status.UNSUBSCRIBED,
    "disabled": Status.UNSUBSCRIBED,  # listmonk
    "blocklisted": Status.UNSUBSCRIBED,  # listmonk
    "blacklisted": Status.UNSUBSCRIBED,  # listmonk before v1
    "cleaned": Status.BOUNCED,  # Mailchimp
    "bounced": Status.BOUNCED,
    "complained": Status.COMPLAINED,
}

_EMAIL_COLUMNS = ("email", "email address", "e-mail", "e-mail address", "email_address")
_NAME_COLUMNS = ("name", "full name")
_FIRST_COLUMNS = ("first name", "fname")
_LAST_COLUMNS = ("last name", "lname")
_STATUS_COLUMNS = ("status", "member status", "subscription status")
_REGION_COLUMNS = ("regions", "region")
_TAG_COLUMNS = ("tags",)
_CREATED_COLUMNS = ("created_at", "optin_time", "created")
_TRUE = ("1", "true", "yes", "y")
_FALSE = ("", "0", "false", "no", "n")


@dataclass
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0  # status changed (an unsubscribe, bounce or confirmation the file brought)
    unchanged: int = 0
    kept_unsubscribed: int = 0  # the file says subscribed, we know better
    suppressions: int = 0  # suppression-only rows that added an entry to the list
    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return (
            self.created
            + self.updated
            + self.unchanged
            + self.kept_unsubscribed
            + self.suppressions
            + len(self.errors)
        )


@dataclass(frozen=True)
class Row:
    email: str  # normalised address; for a suppression-only row, possibly `sha256:<hex>`
    name: str
    status: Status | None  # None: a suppression-only row (status `suppressed`)
    regions: frozenset[str]
    paused: bool
    created_at: datetime | None
    source: str = ""
    suppression: str = ""  # the reason it is suppressed, when the file says so

    @property
    def key(self) -> str:
        """What the suppression list keeps for this row's address."""
        return self.email if is_erased_key(self.email) else email_key(self.email)


def _pick(row: dict[str, str], names: Iterable[str]) -> str | None:
    for name in names:
        if name in row:
            return row[name]
    return None


def parse_row(raw: dict[str, str], known_regions: Iterable[str]) -> tuple[Row, list[str]]:
    """One CSV record (keys already lower-cased) -> a checked Row and its warnings; raises ValueError."""
    known = list(known_regions)
    warnings: list[str] = []
    # Every cell, as export_csv defused every cell: an address can start with "-" or "=" too.
    raw = {k: _undefuse(v) for k, v in raw.items()}
    status_cell = (_pick(raw, _STATUS_COLUMNS) or "").strip().lower()
    suppression = (raw.get("suppression") or "").strip()
    if len(suppression) > 30 or not suppression.isprintable():
        raise InputError("suppression", "suppression must be printable and at most 30 characters")
    email_cell = (_pick(raw, _EMAIL_COLUMNS) or "").strip()
    if status_cell == SUPPRESSED:
        return _suppression_row(raw, email_cell, suppression or "manual"), warnings
    email = normalize_email(email_cell)
    name = _pick(raw, _NAME_COLUMNS)
    if name is None:
        first, last = _pick(raw, _FIRST_COLUMNS) or "", _pick(raw, _LAST_COLUMNS) or ""
        name = f"{first.strip()} {last.strip()}".strip()
    name = clean_name(name)

    if status_cell not in STATUS_ALIASES:
        choices = ", ".join(sorted([k for k in STATUS_ALIASES if k] + [SUPPRESSED]))
        raise InputError("status", f"unknown status {status_cell!r} (known: {choices})")
    status = STATUS_ALIASES[status_cell]
    # Mailchimp exports each audience segment as its own file; the columns say which one.
    if (raw.get("clean_time") or "").strip():
        status = Status.BOUNCED
    elif (raw.get("unsub_time") or "").strip():
        status = Status.UNSUBSCRIBED

    regions: set[str] = set()
    region_cell = _pick(raw, _REGION_COLUMNS)
    if region_cell:
        regions |= check_regions(split_regions(region_cell), known)
    tag_cell = _pick(raw, _TAG_COLUMNS)
    if tag_cell:
        # Tags carry more than regions (Mailchimp writes "VIP","Africa"): keep the regions, note the rest.
        tags = [t.strip().strip('"').strip() for t in split_regions(tag_cell)]
        by_fold = {r.casefold(): r for r in known}
        other = [t for t in tags if t and t.casefold() not in by_fold]
        regions |= {by_fold[t.casefold()] for t in tags if t.casefold() in by_fold}
        if other:
            warnings.append(f"tags that are not regions were ignored: {', '.join(other)}")
    attributes = raw.get("attributes")
    if attributes and attributes.strip():
        try:
            attrs = json.loads(attributes)
        except json.JSONDecodeError as err:
            raise InputError("attributes", f"attributes is not valid JSON: {err.msg}") from None
        value = attrs.get("regions") if isinstance(attrs, dict) else None
        if isinstance(value, str):
            value = split_regions(value)
        if value is not None:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError("attributes", "attributes.regions must be a list of region names")
            regions |= check_regions(value, known)

    paused_cell = (raw.get("paused") or "").strip().lower()
    if paused_cell not in _TRUE + _FALSE:
        raise InputError("paused", f"paused must be true or false, not {paused_cell!r}")

    created_at = _created_at(raw)
    row_source = _row_source(raw)
    row = Row(
        email, name, status, frozenset(regions), paused_cell in _TRUE, created_at, row_source, suppression
    )
    return row, warnings


def _suppression_row(raw: dict[str, str], email_cell: str, reason: str) -> Row:
    """A row with status `suppressed`: an address, or an erased one's `sha256:<hex>`."""
    hashed = email_cell.lower()
    if hashed.startswith("sha256:"):
        if not is_erased_key(hashed):
            raise InputError("email", f"{email_cell[:80]!r} is not sha256: and 64 hex digits")
        email = hashed
    else:
        email = normalize_email(email_cell)
    return Row(email, "", None, frozenset(), False, _created_at(raw), _row_source(raw), reason)


def _created_at(raw: dict[str, str]) -> datetime | None:
    created_cell = (_pick(raw, _CREATED_COLUMNS) or "").strip()
    if not created_cell:
        return None
    try:
        created_at = datetime.fromisoformat(created_cell)
    except ValueError:
        raise InputError("created_at", f"{created_cell!r} is not an ISO 8601 date-time") from None
    return created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at


def _row_source(raw: dict[str, str]) -> str:
    row_source = (raw.get("source") or "").strip()
    if len(row_source) > 50 or not row_source.isprintable():
        raise InputError("source", "source must be printable and at most 50 characters")
    return row_source


class CsvReadError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(message)


def read_rows(stream: TextIO) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the record starts, record with lower-cased keys), skipping blank lines.

    A record the csv module cannot parse (an over-long field, a NUL byte) ends the file with a
    `CsvReadError` naming its line: what follows it cannot be trusted to line up.
    """
    reader = csv.reader(stream)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return
        if header and header[0].startswith("\ufeff"):  # Excel's UTF-8 byte-order mark
            header[0] = header[0][1:]
        bad = _undecodable(dict(enumerate(header)))
        if bad:
            raise CsvReadError(1, f"the header is not valid UTF-8 ({bad})")
        keys = [h.strip().lower() for h in header]
        start = reader.line_num + 1
        for record in reader:
            if any(cell.strip() for cell in record):
                yield start, dict(zip(keys, record, strict=False))
            start = reader.line_num + 1
    except csv.Error as err:
        raise CsvReadError(start, f"cannot read this record: {err}") from None


def import_bytes(
    session: Session, data: bytes, known_regions: Iterable[str], *, source: str = "import"
) -> ImportReport:
    """Import a file's bytes: UTF-8, with or without a byte-order mark, decoded record by record.

    Bytes that are not UTF-8 are kept as surrogates (`surrogateescape`) so the csv module still
    sees every quote and line break where they are; a record holding any is an error on its
    line, and the other records are imported.
    """
    text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):  # before csv parsing: a BOM would hide a quoted header
        text = text[1:]
    return import_csv(session, io.StringIO(text, newline=""), known_regions, source=source)


def _undecodable(record: dict) -> str:
    """'' if every cell decoded; else which column holds which byte that is not UTF-8."""
    for column, cell in record.items():
        for ch in cell or "":
            if "\udc80" <= ch <= "\udcff":
                where = f"column {column!r}" if isinstance(column, str) else f"column {column + 1}"
                return f"byte 0x{ord(ch) - 0xDC00:02x} in {where}"
    return ""


def import_csv(
    session: Session, stream: TextIO, known_regions: Iterable[str], *, source: str = "import"
) -> ImportReport:
    """Import every good row of `stream`; see the module docstring for the rules."""
    known = list(known_regions)
    report = ImportReport()
    seen: dict[str, int] = {}
    try:
        rows = list(read_rows(stream))
    except CsvReadError as err:
        report.errors.append(RowError(err.line, f"{err} (nothing imported)"))
        return report
    if rows and not any(k in rows[0][1] for k in _EMAIL_COLUMNS):
        report.errors.append(RowError(1, _no_email_column(list(rows[0][1]))))
        return report
    for line, raw in rows:
        bad = _undecodable(raw)
        if bad:
            report.errors.append(RowError(line, f"not valid UTF-8 ({bad}); this row was skipped"))
            continue
        try:
            row, warnings = parse_row(raw, known)
        except ValueError as err:
            report.errors.append(RowError(line, str(err)))
            continue
        report.warnings.extend(RowError(line, w) for w in warnings)
        key = row.key
        if key in seen:
            report.warnings.append(RowError(line, f"{row.email} already appeared on line {seen[key]}"))
        seen.setdefault(key, line)
        _apply(session, row, report, source)
    return report


def _no_email_column(header: list[str]) -> str:
    message = "no e-mail column (expected one of: email, Email Address)"
    # Spreadsheets set to a European locale save "CSV" with semicolons: the whole header is
    # then one column, and saying so is more use than listing column names.
    cells = [c.strip().strip('"').strip().lower() for h in header for c in h.split(";")]
    if any(";" in h for h in header) and any(c in _EMAIL_COLUMNS for c in cells):
        message += "; the file looks semicolon-separated: save it comma-separated"
    return message


def _apply(session: Session, row: Row, report: ImportReport, source: str) -> None:
    if row.status is None:  # a suppression, with no subscriber
        added = store.suppress_key(
            session, row.key, reason=row.suppression, source=row.source or source, created_at=row.created_at
        )
        if added:
            report.suppressions += 1
        else:
            report.unchanged += 1
        return
    if row.suppression:
        store.suppress_key(session, row.key, reason=row.suppression, source=row.source or source)
    existing = store.get_by_email(session, row.email)
    if existing is None and store.is_erased(session, row.email):
        # Erased on request: the address is not stored again, whatever the file says.
        report.kept_unsubscribed += 1
        return
    if existing is None:
        sub = store.add_subscriber(
            session,
            row.email,
            name=row.name,
            regions=row.regions,
            status=row.status,
            source=source,
            created_at=row.created_at,
        )
        if row.status == Status.ACTIVE and sub.status != Status.ACTIVE:
            report.kept_unsubscribed += 1  # suppressed earlier, e.g. a deleted subscriber
            return
        sub.paused = row.paused
        if row.source:
            sub.source = row.source  # keep where they first came from (round-trips our export)
        report.created += 1
        return
    if row.status in SUPPRESSING and existing.status != row.status and existing.status not in SUPPRESSING:
        store.set_status(session, existing, row.status, source=source)
        report.updated += 1
    elif (
        row.status == Status.ACTIVE
        and existing.status == Status.PENDING
        and not store.is_suppressed(session, existing.email)
    ):
        store.set_status(session, existing, Status.ACTIVE, source=source)
        report.updated += 1
    elif row.status in (Status.ACTIVE, Status.PENDING) and (
        existing.status in SUPPRESSING or store.is_suppressed(session, existing.email)
    ):
        report.kept_unsubscribed += 1
    else:
        report.unchanged += 1


def export_rows(session: Session) -> Iterator[dict[str, str]]:
    """Every subscriber (with its suppression reason), then every suppression with no subscriber."""
    suppressions = {s.email_key: s for s in store.list_suppressions(session)}
    unclaimed = dict(suppressions)  # what no subscriber row accounts for
    for sub in store.list_subscribers(session):
        entry = next((suppressions[k] for k in store.suppression_keys(sub.email) if k in suppressions), None)
        if entry is not None:
            unclaimed.pop(entry.email_key, None)
        yield {
            "email": sub.email,
            "name": sub.name,
            "status": sub.status.value,
            "regions": "; ".join(sorted(sub.regions or ())),
            "paused": "true" if sub.paused else "false",
            "source": sub.source,
            "created_at": store.as_utc(sub.created_at).isoformat(),
            "suppression": entry.reason if entry is not None else "",
        }
    for entry in unclaimed.values():  # erased addresses are sha256:<hex> here, never the address
        yield {
            "email": entry.email_key,
            "name": "",
            "status": SUPPRESSED,
            "regions": "",
            "paused": "",
            "source": entry.source,
            "created_at": store.as_utc(entry.created_at).isoformat(),
            "suppression": entry.reason,
        }


def export_csv(session: Session, stream: TextIO) -> int:
    """Write every subscriber and suppression as CSV (our column names, readable by `import_csv`);
    returns the number of rows."""
    writer = csv.DictWriter(stream, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in export_rows(session):
        writer.writerow({k: _defuse(v) for k, v in row.items()})
        n += 1
    return n


# A cell starting with one of these gets a leading apostrophe on export: a spreadsheet would
# run the first four as a formula (CSV injection). A value that already starts with an
# apostrophe gets one too, so that import can always remove exactly one: "'=x" is a valid
# local part, and names like "'s-Gravesande" exist.
_DEFUSE = ("=", "+", "-", "@", "'")


def _defuse(value: str) -> str:
    """Cells opening a spreadsheet could run as formulas get a leading apostrophe (CSV injection)."""
    return "'" + value if value[:1] in _DEFUSE else value


def _undefuse(value: str) -> str:
    """Undo `_defuse`; any other cell (a Mailchimp name like "'Bob'") is left as it is."""
    return value[1:] if value[:1] == "'" and value[1:2] in _DEFUSE else value


def export_text(session: Session) -> str:
    buf = io.StringIO()
    export_csv(session, buf)
    return buf.getvalue()
