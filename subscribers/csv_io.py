"""Import and export subscribers as CSV.

Import understands our own export and the column names of Mailchimp and listmonk exports:

- address: `email`, `Email Address` (Mailchimp), `E-mail`
- name: `name`, or Mailchimp's `First Name` + `Last Name` (`FNAME`/`LNAME`)
- status: `status`, `Member Status`; Mailchimp's per-file exports are recognised by their
  `UNSUB_TIME` (unsubscribed) and `CLEAN_TIME` (cleaned = bounced) columns
- regions: `regions` (ours), listmonk's `attributes` JSON `{"regions": [...]}`, and the values
  of Mailchimp's `TAGS` / `GROUPS` that name a region or one of its aliases (or of the column
  the caller names instead). Mailchimp's address columns (`ADDRESS`, `PHONE`, `REGION` -- a US
  state --, `CC`, `LATITUDE`, ...) are not our regions and are not used.
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

Speed: rows are checked one by one, then applied in batches: one query finds the batch's
existing subscribers, one its suppressions, and new subscribers, their regions, events and
suppressions go in as one multi-row INSERT each (on PostgreSQL: ids reserved first, COPY, and
events and regions spread by the server from JSON; a full batch is written from its own thread
while the next rows are read). Rows whose outcome depends on an earlier row
of the same batch (an address twice in the file, a suppression-only row) or that change an
existing subscriber take the one-by-one path, after the batch before them is written, so the
result is the same as applying every row in file order. `plan_import` runs the same import and
rolls it back: what would be added, updated or skipped, and why.
"""

from __future__ import annotations

import csv
import functools
import gc
import io
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TextIO, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscribers import store
from subscribers.store import SUPPRESSING, Event, RegionPreference, Status, Subscriber, Suppression
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
_REGION_COLUMNS = ("regions",)
# Columns whose values are regions where they name one (or an alias); the rest are ignored.
DEFAULT_TAG_COLUMNS = ("tags", "groups")
_TAG_CELLS_KEPT = 10_000  # distinct tag cells a RowParser remembers (a file has a few dozen)
_CREATED_COLUMNS = ("created_at", "optin_time", "created")
_TRUE = ("1", "true", "yes", "y")
# Each field a row is read for -> the columns it may come from, the first present one wins.
_FIELDS: dict[str, tuple[str, ...]] = {
    "status": _STATUS_COLUMNS,
    "suppression": ("suppression",),
    "email": _EMAIL_COLUMNS,
    "name": _NAME_COLUMNS,
    "first": _FIRST_COLUMNS,
    "last": _LAST_COLUMNS,
    "clean_time": ("clean_time",),
    "unsub_time": ("unsub_time",),
    "regions": _REGION_COLUMNS,
    "attributes": ("attributes",),
    "paused": ("paused",),
    "created": _CREATED_COLUMNS,
    "source": ("source",),
}
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
    # What the suppression list keeps for this row's address. Set once on creation: every row's
    # key is read, and a cached_property takes a lock on each first read (Python 3.11).
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = self.email if is_erased_key(self.email) else email_key(self.email)
        object.__setattr__(self, "key", key)


class RowParser:
    """Checks one CSV record at a time; built once per file (regions, aliases, which columns)."""

    def __init__(
        self,
        known_regions: Iterable[str],
        *,
        aliases: Mapping[str, Iterable[str]] | None = None,
        tag_columns: Sequence[str] = DEFAULT_TAG_COLUMNS,
    ) -> None:
        self.known = list(known_regions)
        self.by_name = {r.casefold(): r for r in self.known}
        for region, names in (aliases or {}).items():
            if region in self.known:
                for name in names:
                    self.by_name.setdefault(name.strip().casefold(), region)
        self.tag_columns = tuple(c.strip().lower() for c in tag_columns)
        self._tag_cells: dict[str, tuple[frozenset[str], str]] = {}
        self._pairs: dict[tuple[str, ...], list[tuple[str, str]]] = {}  # columns -> (field, column)

    def __call__(self, raw: dict[str, str]) -> tuple[Row, list[str]]:
        """One record (keys lower-cased) -> a checked Row and its warnings; raises ValueError."""
        return _parse_row(self.cells(raw), self)

    def cells(self, raw: dict[str, str]) -> dict[str, str]:
        """The record's cells by field (`_FIELDS`, and `tag:<column>`), as stored (`_undefuse`).

        Which column gives which field is worked out once per set of columns (every record of a
        file has the same, or a prefix of them when short), not for every field of every row.
        """
        columns = tuple(raw)
        pairs = self._pairs.get(columns)
        if pairs is None:
            pairs = self._pairs[columns] = self._resolve(raw)
        return {f: _undefuse(raw[column]) for f, column in pairs}

    def _resolve(self, raw: dict[str, str]) -> list[tuple[str, str]]:
        present = [(f, [n for n in names if n in raw]) for f, names in _FIELDS.items()]
        pairs = [(f, names[0]) for f, names in present if names]
        return pairs + [(f"tag:{c}", c) for c in self.tag_columns if c in raw]

    def regions_in_tags(self, cells: dict[str, str], warnings: list[str]) -> set[str]:
        # Tags carry more than regions (Mailchimp writes "VIP","Africa"): keep the regions, note the rest.
        regions: set[str] = set()
        for column in self.tag_columns:
            cell = cells.get(f"tag:{column}")
            if not cell:
                continue
            found, warning = self._tags_of(cell)
            regions |= found
            if warning:
                warnings.append(warning)
        return regions

    def _tags_of(self, cell: str) -> tuple[frozenset[str], str]:
        """(regions named, warning or ''), remembered: a list has few distinct tag cells."""
        known = self._tag_cells.get(cell)
        if known is not None:
            return known
        tags = [t.strip().strip('"').strip() for t in split_regions(cell)]
        other = [t for t in tags if t and t.casefold() not in self.by_name]
        regions = frozenset(self.by_name[t.casefold()] for t in tags if t.casefold() in self.by_name)
        out = regions, (f"tags that are not regions were ignored: {', '.join(other)}" if other else "")
        if len(self._tag_cells) < _TAG_CELLS_KEPT:
            self._tag_cells[cell] = out
        return out


def _parse_row(cells: dict[str, str], parser: RowParser) -> tuple[Row, list[str]]:
    """One record's cells (`RowParser.cells`) -> a checked Row and its warnings."""
    known = parser.known
    warnings: list[str] = []
    status_cell = cells.get("status", "").strip().lower()
    suppression = cells.get("suppression", "").strip()
    if len(suppression) > 30 or not suppression.isprintable():
        raise InputError("suppression", "suppression must be printable and at most 30 characters")
    email_cell = cells.get("email", "").strip()
    if status_cell == SUPPRESSED:
        return _suppression_row(cells, email_cell, suppression or "manual"), warnings
    email = normalize_email(email_cell)
    name = cells.get("name")
    if name is None:
        first, last = cells.get("first", ""), cells.get("last", "")
        name = f"{first.strip()} {last.strip()}".strip()
    name = clean_name(name)

    if status_cell not in STATUS_ALIASES:
        choices = ", ".join(sorted([k for k in STATUS_ALIASES if k] + [SUPPRESSED]))
        raise InputError("status", f"unknown status {status_cell!r} (known: {choices})")
    status = STATUS_ALIASES[status_cell]
    # Mailchimp exports each audience segment as its own file; the columns say which one.
    if cells.get("clean_time", "").strip():
        status = Status.BOUNCED
    elif cells.get("unsub_time", "").strip():
        status = Status.UNSUBSCRIBED

    regions: set[str] = set()
    region_cell = cells.get("regions")
    if region_cell:
        regions |= check_regions(split_regions(region_cell), known)
    regions |= parser.regions_in_tags(cells, warnings)
    attributes = cells.get("attributes")
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

    paused_cell = cells.get("paused", "").strip().lower()
    if paused_cell not in _TRUE + _FALSE:
        raise InputError("paused", f"paused must be true or false, not {paused_cell!r}")

    created_at = _created_at(cells)
    row_source = _row_source(cells)
    row = Row(
        email, name, status, frozenset(regions), paused_cell in _TRUE, created_at, row_source, suppression
    )
    return row, warnings


def _suppression_row(cells: dict[str, str], email_cell: str, reason: str) -> Row:
    """A row with status `suppressed`: an address, or an erased one's `sha256:<hex>`."""
    hashed = email_cell.lower()
    if hashed.startswith("sha256:"):
        if not is_erased_key(hashed):
            raise InputError("email", f"{email_cell[:80]!r} is not sha256: and 64 hex digits")
        email = hashed
    else:
        email = normalize_email(email_cell)
    return Row(email, "", None, frozenset(), False, _created_at(cells), _row_source(cells), reason)


def _created_at(cells: dict[str, str]) -> datetime | None:
    created_cell = cells.get("created", "").strip()
    if not created_cell:
        return None
    try:
        created_at = datetime.fromisoformat(created_cell)
    except ValueError:
        raise InputError("created_at", f"{created_cell!r} is not an ISO 8601 date-time") from None
    return created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at


def _row_source(cells: dict[str, str]) -> str:
    row_source = cells.get("source", "").strip()
    if len(row_source) > 50 or not row_source.isprintable():
        raise InputError("source", "source must be printable and at most 50 characters")
    return row_source


class CsvReadError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(message)


def read_rows(stream: TextIO, header_out: list[str] | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the record starts, record with lower-cased keys), skipping blank lines.

    A record the csv module cannot parse (an over-long field, a NUL byte) ends the file with a
    `CsvReadError` naming its line: what follows it cannot be trusted to line up. The header
    as written in the file is appended to `header_out` when given.
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
        if header_out is not None:
            header_out.extend(header)
        keys = [h.strip().lower() for h in header]
        start = reader.line_num + 1
        for record in reader:
            if any(cell.strip() for cell in record):
                yield start, dict(zip(keys, record, strict=False))
            start = reader.line_num + 1
    except csv.Error as err:
        raise CsvReadError(start, f"cannot read this record: {err}") from None


def _text_of(data: bytes) -> str:
    """Bytes that are not UTF-8 are kept as surrogates (`surrogateescape`) so the csv module still
    sees every quote and line break where they are; a record holding any is an error on its line."""
    text = data.decode("utf-8", "surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text  # before csv: a BOM hides a quoted header


def import_bytes(
    session: Session, data: bytes, known_regions: Iterable[str], *, source: str = "import", **options: Any
) -> ImportReport:
    """Import a file's bytes: UTF-8, with or without a byte-order mark, decoded record by record.

    A record holding bytes that are not UTF-8 is an error on its line, and the other records
    are imported. `options` are `import_csv`'s.
    """
    stream = io.StringIO(_text_of(data), newline="")
    return import_csv(session, stream, known_regions, source=source, **options)


def _undecodable(record: dict) -> str:
    """'' if every cell decoded; else which column holds which byte that is not UTF-8."""
    for column, cell in record.items():
        for ch in cell or "":
            if "\udc80" <= ch <= "\udcff":
                where = f"column {column!r}" if isinstance(column, str) else f"column {column + 1}"
                return f"byte 0x{ord(ch) - 0xDC00:02x} in {where}"
    return ""


_SURROGATE = re.compile("[\udc80-\udcff]")  # what surrogateescape made of bytes that are not UTF-8
BATCH_ROWS = 2000  # rows applied per batch: a few queries and multi-row INSERTs each


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _collector_paused(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `fn` with Python's cycle collector off, as it was before afterwards.

    An import allocates a few objects per row and keeps a batch of them: the collector's full
    passes over that growing heap took a fifth of a 100,000-row import. What cycles the import
    leaves are collected after it, by the next pass.
    """

    @functools.wraps(fn)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return paused


@_collector_paused
def import_csv(
    session: Session,
    stream: TextIO,
    known_regions: Iterable[str],
    *,
    source: str = "import",
    aliases: Mapping[str, Iterable[str]] | None = None,
    tag_columns: Sequence[str] = DEFAULT_TAG_COLUMNS,
    progress: Callable[[int, int], None] | None = None,
    header_out: list[str] | None = None,
    batched: bool = True,
) -> ImportReport:
    """Import every good row of `stream`; see the module docstring for the rules.

    `aliases` (region -> other names, as `[regions.aliases]`) and `tag_columns` say which tag
    values are regions. `progress(lines_done, lines_in_all)` is called after each batch.
    `batched=False` applies every row one by one through the store: slow, and the reference
    the batched path is tested against.
    """
    parser = RowParser(known_regions, aliases=aliases, tag_columns=tag_columns)
    report = ImportReport()
    text = stream.read()
    records = read_rows(io.StringIO(text, newline=""), header_out)
    try:
        first = next(records, None)
        _check_readable(text)  # a record that cannot be read anywhere means nothing is imported
    except CsvReadError as err:
        report.errors.append(RowError(err.line, f"{err} (nothing imported)"))
        return report
    if first is None:
        return report
    if not any(k in first[1] for k in _EMAIL_COLUMNS):
        report.errors.append(RowError(1, _no_email_column(list(first[1]))))
        return report
    total_lines = text.count("\n") + 1
    batch = _Batch(session, report, source, in_background=session.get_bind().dialect.name == "postgresql")
    seen: dict[str, int] = {}
    maybe_undecodable = _SURROGATE.search(text) is not None  # else no record needs the check
    try:
        for line, raw in itertools.chain([first], records):
            bad = maybe_undecodable and _undecodable(raw)
            if bad:
                report.errors.append(RowError(line, f"not valid UTF-8 ({bad}); this row was skipped"))
                continue
            try:
                row, warnings = parser(raw)
            except ValueError as err:
                report.errors.append(RowError(line, str(err)))
                continue
            report.warnings.extend(RowError(line, w) for w in warnings)
            key = row.key
            if key in seen or row.status is None or not batched:
                if key in seen:
                    again = f"{row.email} already appeared on line {seen[key]}"
                    report.warnings.append(RowError(line, again))
                batch.write()  # this row's outcome depends on what came before it
                _apply(session, row, report, source)
            else:
                batch.rows.append(row)
                if len(batch.rows) >= BATCH_ROWS:
                    batch.write_later()
                    if progress is not None:
                        progress(line, total_lines)
            seen.setdefault(key, line)
        batch.write()
    finally:
        batch.close()
    if progress is not None:
        progress(total_lines, total_lines)
    return report


@dataclass(frozen=True)
class ColumnUse:
    column: str  # as written in the file's header
    meaning: str  # how the import reads it, in words for staff


@dataclass
class ImportPlan:
    """What an import would do: each column as understood, and the counts it would give."""

    columns: list[ColumnUse]
    report: ImportReport

    def reasons(self, limit: int = 5) -> list[str]:
        """The first problems (errors, then warnings), each naming its line."""
        return [str(r) for r in [*self.report.errors, *self.report.warnings][:limit]]


_MEANINGS: dict[str, str] = {
    **dict.fromkeys(_EMAIL_COLUMNS, "address"),
    **dict.fromkeys(_NAME_COLUMNS, "name"),
    **dict.fromkeys(_FIRST_COLUMNS, "name: first part"),
    **dict.fromkeys(_LAST_COLUMNS, "name: last part"),
    **dict.fromkeys(_STATUS_COLUMNS, "status"),
    **dict.fromkeys(_CREATED_COLUMNS, "signed up at"),
    "regions": "regions (each must be a configured region)",
    "attributes": "listmonk attributes: their regions",
    "paused": "paused (true or false)",
    "source": "where the subscriber came from",
    "suppression": "suppression reason (the address goes on the suppression list)",
    "unsub_time": "unsubscribed, when filled (Mailchimp)",
    "clean_time": "bounced, when filled (Mailchimp's cleaned)",
    "region": "not used: Mailchimp's REGION is a state or province of the postal address",
}


def understand_columns(
    header: Sequence[str], tag_columns: Sequence[str] = DEFAULT_TAG_COLUMNS
) -> list[ColumnUse]:
    """How `import_csv` reads each column of this header; anything it does not know is not used."""
    tags = {c.strip().lower() for c in tag_columns}
    out = []
    for column in header:
        key = column.strip().lower()
        if key in tags:
            meaning = "regions: the values that name a region or an alias; others ignored with a warning"
        else:
            meaning = _MEANINGS.get(key, "not used")
        out.append(ColumnUse(column, meaning))
    return out


def plan_import(
    session: Session, data: bytes, known_regions: Iterable[str], *, source: str = "import", **options: Any
) -> ImportPlan:
    """What `import_bytes` would do with `data`: it runs the import, then rolls `session` back.

    So the counts are exact (the same checks against the same database) and it takes as long
    as the import. Pass a session with nothing else pending. `options` are `import_csv`'s.
    """
    header: list[str] = []
    try:
        report = import_bytes(session, data, known_regions, source=source, header_out=header, **options)
    finally:
        session.rollback()
    return ImportPlan(understand_columns(header, options.get("tag_columns", DEFAULT_TAG_COLUMNS)), report)


def _check_readable(text: str) -> None:
    """Raise the CsvReadError of the first record the csv module cannot read, if any."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as err:
        raise CsvReadError(start, f"cannot read this record: {err}") from None


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


class _Batch:
    """Rows with distinct addresses, none of them suppression-only, applied together.

    The same decisions as `_apply` makes row by row, taken against what one query per table
    says for the whole batch; what the batch adds is written as one multi-row INSERT per
    table. A change to an existing subscriber (rare in an import) goes through the store.
    """

    def __init__(self, session: Session, report: ImportReport, source: str, *, in_background: bool) -> None:
        self.session = session
        self.report = report
        self.source = source
        self.rows: list[Row] = []
        # With `in_background` (PostgreSQL) a full batch is written from a thread of its own:
        # the server checks and stores one batch (its COPYs, its indexes) in its own process
        # while this thread reads and checks the next rows, instead of each waiting on the other.
        # One batch at a time, in file order; the session is only ever used by one thread at a
        # time, since every other use of it first waits for the batch in flight (`write`).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="digest-import") if in_background else None
        self._in_flight: Future[None] | None = None

    def write_later(self) -> None:
        """Write the rows gathered so far, in the background where that is on."""
        if self._writer is None:
            self.write()
            return
        self._wait()
        rows, self.rows = self.rows, []
        if rows:
            self._in_flight = self._writer.submit(self._write, rows)

    def write(self) -> None:
        """Write the rows gathered so far, now, once the batch in flight (if any) is written."""
        self._wait()
        rows, self.rows = self.rows, []
        if rows:
            self._write(rows)

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()  # its error, if any, is the import's

    def close(self) -> None:
        """Let a batch still in flight finish (after an error: the session is about to be rolled
        back, and must not be in use then), and stop the thread."""
        if self._writer is None:
            return
        if self._in_flight is not None:
            wait([self._in_flight])
            self._in_flight = None
        self._writer.shutdown()

    def _write(self, rows: list[Row]) -> None:
        session = self.session
        session.flush()  # what the one-by-one path added must be seen by the queries below
        keys_of = {row.key: store.suppression_keys(row.email) for row in rows}
        existing = {
            key: (sid, status)
            for key, sid, status in session.execute(
                select(Subscriber.email_key, Subscriber.id, Subscriber.status).where(
                    store.one_of(session, Subscriber.email_key, list(keys_of))
                )
            )
        }
        all_keys = [k for keys in keys_of.values() for k in keys]
        suppressed = set(
            session.scalars(
                select(Suppression.email_key).where(store.one_of(session, Suppression.email_key, all_keys))
            )
        )
        self.now = store.utcnow()
        self.new_subs: list[tuple[dict[str, Any], list[str], Status]] = []  # row, regions, status
        self.new_supps: list[dict[str, Any]] = []
        updates: list[tuple[int, Status]] = []
        for row in rows:
            keys = keys_of[row.key]
            if row.suppression and row.key not in suppressed:
                self._suppress(row.key, row.suppression, row.source or self.source, suppressed)
            found = existing.get(row.key)
            if found is None:
                self._new(row, keys, suppressed)
            else:
                self._known(row, found, keys, suppressed, updates)
        self._insert()
        for sid, status in updates:
            sub = session.get(Subscriber, sid)
            assert sub is not None  # found by the query above, in this transaction
            store.set_status(session, sub, status, source=self.source)

    def _suppress(self, key: str, reason: str, source: str, suppressed: set[str]) -> None:
        self.new_supps.append({"email_key": key, "reason": reason, "source": source, "created_at": self.now})
        suppressed.add(key)

    def _new(self, row: Row, keys: tuple[str, ...], suppressed: set[str]) -> None:
        report = self.report
        if not suppressed.isdisjoint(keys[1:]):
            report.kept_unsubscribed += 1  # erased on request: not stored again, whatever the file says
            return
        is_suppressed = not suppressed.isdisjoint(keys)
        status = row.status
        assert status is not None  # suppression-only rows take the one-by-one path
        if status not in SUPPRESSING and is_suppressed:
            status = Status.UNSUBSCRIBED
        kept = row.status == Status.ACTIVE and status != Status.ACTIVE
        columns = {
            "email": row.email,
            "email_key": row.key,
            "name": row.name,
            "status": status,
            "paused": row.paused and not kept,
            "source": (row.source or self.source) if not kept else self.source,
            "created_at": row.created_at or self.now,
            "updated_at": self.now,
            "confirmed_at": self.now if status == Status.ACTIVE else None,
        }
        self.new_subs.append((columns, sorted(row.regions), status))
        if status in SUPPRESSING and not is_suppressed:
            self._suppress(row.key, status.value, self.source, suppressed)
        if kept:
            report.kept_unsubscribed += 1  # suppressed earlier, e.g. a deleted subscriber
        else:
            report.created += 1

    def _known(
        self,
        row: Row,
        found: tuple[int, Status],
        keys: tuple[str, ...],
        suppressed: set[str],
        updates: list[tuple[int, Status]],
    ) -> None:
        sid, status = found
        is_suppressed = not suppressed.isdisjoint(keys)
        report = self.report
        if row.status in SUPPRESSING and status != row.status and status not in SUPPRESSING:
            updates.append((sid, row.status))
            report.updated += 1
        elif row.status == Status.ACTIVE and status == Status.PENDING and not is_suppressed:
            updates.append((sid, Status.ACTIVE))
            report.updated += 1
        elif row.status in (Status.ACTIVE, Status.PENDING) and (status in SUPPRESSING or is_suppressed):
            report.kept_unsubscribed += 1
        else:
            report.unchanged += 1

    def _insert(self) -> None:
        # Through the driver's executemany or COPY (`store.insert_rows`): SQLAlchemy's own bulk
        # paths cost more per row than the database does.
        session = self.session
        if self.new_subs:
            postgres = session.get_bind().dialect.name == "postgresql"
            ids = self._insert_subscribers(postgres)
            kind = "imported" if self.source == "import" else "subscribed"
            same = {"kind": kind, "source": self.source, "at": self.now}
            paired = list(zip(ids, self.new_subs, strict=True))
            events = [[sid, status.value] for sid, (_c, _r, status) in paired]
            regions = [[sid, region] for sid, (_c, of_row, _s) in paired for region in of_row]
            if postgres:
                # Two narrow tables: the server spreads one JSON text per table into rows.
                store.insert_json_rows(session, Event.__table__, ("subscriber_id", "detail"), events, same)
                preferences = RegionPreference.__table__
                store.insert_json_rows(session, preferences, ("subscriber_id", "region"), regions, {})
            else:
                event_rows = [{"subscriber_id": sid, "detail": detail, **same} for sid, detail in events]
                store.insert_rows(session, Event.__table__, event_rows)
                region_rows = [{"subscriber_id": sid, "region": region} for sid, region in regions]
                store.insert_rows(session, RegionPreference.__table__, region_rows)
        store.insert_rows(session, Suppression.__table__, self.new_supps)

    def _insert_subscribers(self, postgres: bool) -> list[int]:
        """Write the new subscribers; their ids, in the order of `new_subs`."""
        session, table = self.session, Subscriber.__table__
        subs = [columns for columns, _regions, _status in self.new_subs]
        if postgres:
            # The ids first, so the COPY carries them and no query has to look them up after.
            ids = store.reserve_ids(session, table, len(subs))
            for columns, sid in zip(subs, ids, strict=True):
                columns["id"] = sid
            store.insert_rows(session, table, subs)
            return ids
        store.insert_rows(session, table, subs)
        keys = [columns["email_key"] for columns in subs]
        in_keys = store.one_of(session, table.c.email_key, keys)
        ids_of = dict(session.execute(select(table.c.email_key, table.c.id).where(in_keys)).all())
        return [ids_of[key] for key in keys]


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
