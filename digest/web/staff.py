"""The staff console under /staff/: log in, dashboard, this week's issue, preview and test, subscribers.

Security, in the order a request meets it:
- CSRFProtect (the app's) checks the token of every POST; the token lives in the session.
- Every state-changing request must come with an Origin (or, failing that, a Referer) of this
  site: a cross-site form post is refused even if a token leaked. Staff pages send
  `Referrer-Policy: same-origin` so that browsers send a real Origin on their own forms
  (with `no-referrer`, a form post's Origin is "null").
- Then the login: the session carries the account id and its password version (a new password
  ends every other session) and expires after [web] staff_session_hours.
- Roles: editors curate, preview, send tests, approve a review-mode issue and read the run
  history; pages marked `admin_only` (schedules, "send again to these", subscribers) answer 403
  to them.
- Login attempts are limited per client address (Flask-Limiter) and per account (a lock-out
  stored with the account, see `staff_store`).

Sends staff start here (a schedule's "run now", "send again to these") run on a background
thread (`console.BackgroundJobs`, one at a time); the page says it started, and the run then
shows in the run history. The schedules are `console.ConsoleSchedules`: `digest run`'s running
service, or one made for the app on first use.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask_limiter import Limiter
from rich.console import Console
from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from digest.commands.runs import abandon_for_staff, pause_for_staff, plan_resume, run_record, send_resumed
from digest.config import Config
from digest.curate import Draft, clean_intro, ordered, story_key
from digest.db import session_factory
from digest.drafts import load_draft, save_draft
from digest.errors import ConfigError, ConsoleBusyError, DigestError, RunBusyError, ScheduleError
from digest.models import Article, DeliveryStatus
from digest.personal import Links, fill
from digest.pipeline import (
    Issue,
    SendOutcome,
    example_personal,
    issue_from,
    send_issue,
    send_test,
    signing_key,
)
from digest.schedule import MODES, SEND_STOP
from digest.send import SendRun
from digest.transports.base import Transport
from digest.web import charts, console, staff_store
from digest.web.embed import console_context as embed_console_context
from digest.web.staff_store import LoginOutcome, StaffAccount
from subscribers import csv_io
from subscribers import store as subscriber_store
from subscribers.store import Status, Subscriber

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_ENDPOINTS = frozenset({"staff.login", "staff.style"})
MAX_IMPORT_BYTES = 10 * 1024 * 1024  # a CSV of ~100,000 subscribers
IMPORT_ENDPOINT = "staff.subscribers_import"

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# The preview page frames the issue from this site, and nothing else.
PREVIEW_CSP = PAGE_CSP + "; frame-src 'self'"
# The framed issue: the e-mail's inline styles and remote photos, no scripts, framed only here.
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    admin: bool = False


NAV = (
    NavItem("staff.dashboard", "Dashboard"),
    NavItem("staff.issue", "This week's issue"),
    NavItem("staff.preview", "Preview"),
    NavItem("staff.runs", "Runs"),
    NavItem("staff.schedules", "Schedules", admin=True),
    NavItem("staff.subscribers", "Subscribers", admin=True),
    NavItem("staff.embed", "Embed", admin=True),
)
JOBS_KEY = "digest.console.jobs"  # app.extensions: the console's background sends (tests join them)
SCHEDULES_KEY = "digest.console.schedules"  # app.extensions: console.ConsoleSchedules
# Where an approval form may send the browser back to.
APPROVAL_RETURNS = frozenset({"staff.issue", "staff.dashboard", "staff.schedules"})


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def staff_blueprint(
    config: Config,
    engine: Engine,
    *,
    clock: Callable[[], datetime],
    limiter: Limiter,
    transport_factory: Callable[[], Transport],
) -> Blueprint:
    bp = Blueprint("staff", __name__, url_prefix="/staff")
    sessions = session_factory(engine)
    web = config.web
    schedules = console.ConsoleSchedules(config, engine, clock=clock, transport=transport_factory)
    jobs = console.BackgroundJobs(clock)
    workspace = console.Workspace(config, engine, clock, schedules)
    # Check "is a console send running?", change the ledger, start the thread: one request at a time.
    starting = threading.Lock()

    @bp.record_once
    def _bind(state: BlueprintSetupState) -> None:
        schedules.extensions = state.app.extensions  # digest run puts its running service there
        state.app.extensions[SCHEDULES_KEY] = schedules
        state.app.extensions[JOBS_KEY] = jobs

    links = Links(config.newsletter.base_url)
    own_origin = origin_of(config.newsletter.base_url)
    session_length = timedelta(hours=web.staff_session_hours)
    lock_for = timedelta(minutes=web.staff_lockout_minutes)

    # --- helpers -----------------------------------------------------------------------

    def page(template: str, status: int = 200, *, csp: str = PAGE_CSP, **context: Any) -> Response:
        html = render_template(
            f"staff/{template}",
            staff=g.get("staff"),
            nav=NAV,
            flashes=get_flashed_messages(with_categories=True),
            **context,
        )
        resp = Response(html, status=status, mimetype="text/html")
        resp.headers["Content-Security-Policy"] = csp
        return resp

    def refuse(status: int, title: str, message: str) -> Response:
        return page("message.html", status, title=title, message=message)

    def current_staff(db: Session) -> StaffAccount | None:
        data = session.get("staff")
        if not isinstance(data, dict):
            return None
        account = staff_store.get(db, int(data.get("id", 0)))
        try:
            started = datetime.fromisoformat(str(data.get("at")))
        except ValueError:
            started = None
        if (
            account is None
            or data.get("v") != account.password_version
            or started is None
            or clock() - started > session_length
        ):
            session.pop("staff", None)
            return None
        return account

    def origin_ok() -> bool:
        sent = request.headers.get("Origin")
        if not sent or sent == "null":
            sent = origin_of(request.headers.get("Referer", ""))
        return bool(sent) and sent.lower() in {own_origin, origin_of(request.host_url)}

    def admin_only(view: Callable[..., Response]) -> Callable[..., Response]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            if not g.staff.is_admin:
                return refuse(403, "Admins only", "This page is for admins. Ask an admin if you need it.")
            return view(*args, **kwargs)

        return wrapper

    @bp.before_request
    def _guard() -> Response | None:
        if request.method not in SAFE_METHODS and not origin_ok():
            log.warning(
                "staff: refused %s %s from origin %r",
                request.method,
                request.path,
                request.headers.get("Origin"),
            )
            g.staff = None
            return refuse(403, "Refused", "This request did not come from the console's own pages.")
        with sessions() as db:
            g.staff = current_staff(db)
        if g.staff is None and request.endpoint not in PUBLIC_ENDPOINTS:
            return redirect(url_for("staff.login"), 303)
        return None

    @bp.after_request
    def _headers(resp: Response) -> Response:
        # Staff URLs carry no tokens; a same-origin Referer lets browsers send a real Origin.
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        return resp

    # --- style, login, logout -------------------------------------------------------------

    @bp.get("/staff.css")
    def style() -> Response:
        css = render_template("staff/staff.css", primary=web.primary_color, accent=web.accent_color)
        return Response(css, mimetype="text/css")

    @bp.route("/login", methods=["GET", "POST"])
    @limiter.limit(web.staff_login_limit, methods=["POST"])
    def login() -> Response:
        if request.method == "GET":
            if g.staff is not None:
                return redirect(url_for("staff.dashboard"), 303)
            return page("login.html", email="")
        email = request.form.get("email", "").strip()[:320]
        password = request.form.get("password", "")
        with sessions.begin() as db:
            result = staff_store.authenticate(
                db, email, password, now=clock(), max_failures=web.staff_max_failed_logins, lock_for=lock_for
            )
            account = result.account
            if result.outcome == LoginOutcome.OK and account is not None:
                session.clear()  # nothing from before the login carries over (CSRF token included)
                session["staff"] = {
                    "id": account.id,
                    "v": account.password_version,
                    "at": clock().isoformat(),
                }
                log.info("staff login: %s", account.email)
                return redirect(url_for("staff.dashboard"), 303)
        if result.outcome == LoginOutcome.LOCKED and result.locked_until is not None:
            until = result.locked_until.astimezone(config.tz)
            return page(
                "login.html",
                403,
                email=email,
                error=f"This account is locked after {web.staff_max_failed_logins} wrong passwords in a row, "
                f"until {until:%H:%M} ({config.newsletter.timezone}). An admin can unlock it now by "
                "setting a new password (digest staff passwd).",
            )
        return page("login.html", 401, email=email, error="Wrong e-mail address or password.")

    @bp.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("staff.login"), 303)

    @bp.get("/embed")
    @admin_only
    def embed() -> Response:
        """The sign-up form to paste into the site's article template (digest.web.embed)."""
        return page("embed.html", **embed_console_context(config))

    # --- dashboard -----------------------------------------------------------------------

    @bp.get("/")
    def dashboard() -> Response:
        now = clock()
        upcoming = console.next_send(config, schedules, now)
        with sessions() as db:
            runs = console.recent_runs(db)
            chose, everything = console.subscribers_per_region(db, config.regions.order)
            weeks = console.weekly_growth(db, now.astimezone(config.tz).date())
            counts = subscriber_store.count_by_status(db)
        return page(
            "dashboard.html",
            upcoming=upcoming,
            runs=runs,
            chose=chose,
            everything=everything,
            weeks=weeks,
            counts=counts,
            jobs=jobs.recent()[:3],
        )

    def svg(data: bytes) -> Response:
        resp = Response(data, mimetype="image/svg+xml")
        resp.headers["Content-Security-Policy"] = SVG_CSP
        return resp

    @bp.get("/charts/regions.svg")
    def chart_regions() -> Response:
        with sessions() as db:
            chose, everything = console.subscribers_per_region(db, config.regions.order)
        return svg(
            charts.regions_chart(chose, everything, primary=web.primary_color, accent=web.accent_color)
        )

    @bp.get("/charts/growth.svg")
    def chart_growth() -> Response:
        with sessions() as db:
            weeks = console.weekly_growth(db, clock().astimezone(config.tz).date())
        return svg(charts.growth_chart(weeks, primary=web.primary_color, accent=web.accent_color))

    # --- this week's issue ---------------------------------------------------------------

    def current_issue() -> tuple[console.Collected, Draft | None, Issue]:
        collected = workspace.get()
        issue_date = collected.now.astimezone(config.tz).date()
        with sessions() as db:
            draft = load_draft(db, issue_date)
        return collected, draft, issue_from(config, collected.now, collected.result, draft)

    def story_rows(collected: console.Collected, draft: Draft | None, issue: Issue) -> list[dict[str, Any]]:
        """Every collected story by region, in the order the issue would have them."""
        cap = config.collect.max_articles_per_region
        in_issue = {story_key(t) for s in issue.digest.sections for t in s.teasers}
        lead = story_key(issue.digest.lead) if issue.digest.lead else None
        excluded = draft.excluded if draft else frozenset()
        index = 0
        regions = []
        for region in config.regions.order:
            articles = sorted(
                (a for a in collected.result.articles if a.region == region),
                key=lambda a: a.published,
                reverse=True,
            )
            if not articles:
                continue
            rows = []
            shown = 0
            for position, article in enumerate(
                ordered(articles, draft.order.get(region, ()) if draft else ()), 1
            ):
                key = story_key(article)
                included = key not in excluded
                shown += included
                rows.append(
                    {
                        "index": index,
                        "position": position,
                        "article": article,
                        "key": key,
                        "included": included,
                        "lead": key == lead,
                        "over_cap": included and shown > cap,
                        "in_issue": key in in_issue,
                    }
                )
                index += 1
            regions.append({"region": region, "rows": rows})
        return regions

    def issue_page(status: int = 200, **extra: Any) -> Response:
        collected, draft, issue = current_issue()
        dropped: dict[str, list[Article]] = {}
        for article, reason in collected.result.dropped:
            dropped.setdefault(reason, []).append(article)
        return page(
            "issue.html",
            status,
            collected=collected,
            draft=draft,
            issue=issue,
            regions=story_rows(collected, draft, issue),
            dropped=dropped,
            intro=extra.pop("intro", draft.intro if draft else ""),
            saved=request.args.get("saved") == "1",
            config_cap=config.collect.max_articles_per_region,
            reviews=console.awaiting_approval(console.scheduled_sends(schedules)[0]),
            **extra,
        )

    @bp.get("/issue")
    def issue() -> Response:
        return issue_page()

    @bp.post("/issue")
    def issue_save() -> Response:
        collected, draft, _issue = current_issue()
        form = request.form
        try:
            intro = clean_intro(form.get("intro", ""))
        except ValueError as err:
            return issue_page(400, intro=form.get("intro", ""), intro_error=str(err))
        by_key = {story_key(a): a for a in collected.result.articles}
        stories: list[tuple[float, int, str]] = []  # (position, form order, key)
        leaving: set[str] = set()
        for n, raw in enumerate(form.getlist("story")):
            key = form.get(f"key-{raw}", "")
            if key not in by_key:
                continue  # a story a re-collect in between took away
            try:
                position = float(form.get(f"pos-{raw}", "") or n + 1)
            except ValueError:
                position = float(n + 1)
            stories.append((position, n, key))
            if form.get(f"include-{raw}") != "on":
                leaving.add(key)
        order: dict[str, list[str]] = {}
        for _position, _n, key in sorted(stories):
            order.setdefault(by_key[key].region or "", []).append(key)
        move = form.get("move", "")
        if ":" in move:
            raw, direction = move.split(":", 1)
            moved = form.get(f"key-{raw}", "")
            keys = order.get(by_key[moved].region or "", []) if moved in by_key else []
            if moved in keys:
                i = keys.index(moved)
                j = i - 1 if direction == "up" else i + 1
                if 0 <= j < len(keys):
                    keys[i], keys[j] = keys[j], keys[i]
        old = draft or Draft(issue_date=collected.now.astimezone(config.tz).date())
        # Choices about stories not collected now are kept: they apply again if the story returns.
        absent_excluded = {k for k in old.excluded if k not in by_key}
        new_order = {
            region: (*keys, *(k for k in old.order.get(region, ()) if k not in by_key))
            for region, keys in order.items()
        }
        lead_raw = form.get("lead", "")
        lead = form.get(f"key-{lead_raw}", "") if lead_raw else ""
        new = Draft(
            issue_date=old.issue_date,
            excluded=frozenset(leaving | absent_excluded),
            lead=lead if lead in by_key and lead not in leaving else None,
            order=new_order,
            intro=intro,
        )
        with sessions.begin() as db:
            save_draft(db, new, by=g.staff.email, at=clock())
        log.info("staff: %s saved the draft of %s", g.staff.email, new.issue_date)
        return redirect(url_for("staff.issue", saved=1), 303)

    @bp.post("/issue/collect")
    def issue_collect() -> Response:
        workspace.get(again=True)
        return redirect(url_for("staff.issue"), 303)

    # --- preview and test -----------------------------------------------------------------

    def chosen_regions(values: list[str]) -> frozenset[str] | None:
        chosen = frozenset(v for v in values if v in config.regions.order)
        return chosen or None

    def preview_page(status: int = 200, **extra: Any) -> Response:
        _collected, _draft, issue = current_issue()
        values = request.values.getlist("region")
        regions = chosen_regions(values)
        variant = issue.digest.for_regions(regions)
        empty = regions is not None and not variant.sections and bool(issue.digest.sections)
        rendered = None if empty else issue.renderer.variants(issue.digest).get(regions)
        return page(
            "preview.html",
            status,
            csp=PREVIEW_CSP,
            issue=issue,
            rendered=rendered,
            regions=regions or frozenset(),
            query=[("region", r) for r in sorted(regions or ())],
            empty=empty,
            **extra,
        )

    @bp.get("/preview")
    def preview() -> Response:
        return preview_page()

    @bp.get("/preview/frame")
    def preview_frame() -> Response:
        _collected, _draft, issue = current_issue()
        regions = chosen_regions(request.args.getlist("region"))
        rendered = issue.renderer.variants(issue.digest).get(regions)
        resp = Response(fill(rendered.html, example_personal(links)), mimetype="text/html")
        resp.headers["Content-Security-Policy"] = FRAME_CSP
        return resp

    @bp.post("/preview/test")
    def preview_test() -> Response:
        _collected, _draft, issue = current_issue()
        regions = chosen_regions(request.form.getlist("region"))
        to = g.staff.email
        try:
            reply = send_test(config, issue, to, transport_factory(), regions=regions)
        except (DigestError, ValueError, OSError) as err:
            log.warning("staff: test send to %s failed: %s", to, err)
            return preview_page(502, test_error=f"The test copy could not be sent: {err}")
        log.info("staff: test copy to %s: %s", to, reply)
        return preview_page(test_sent=f"A test copy went to {to} ({reply}).")

    # --- subscribers (admins) ------------------------------------------------------------

    @bp.get("/subscribers")
    @admin_only
    def subscribers() -> Response:
        q = request.args.get("q", "").strip()[:320]
        status = request.args.get("status", "")
        with sessions() as db:
            query = select(Subscriber).order_by(Subscriber.id.desc()).limit(101)
            if q:
                pattern = (
                    "%" + q.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                )
                query = query.where(
                    or_(
                        Subscriber.email_key.like(pattern, escape="\\"),
                        Subscriber.name.ilike(pattern, escape="\\"),
                    )
                )
            if status in {s.value for s in Status}:
                query = query.where(Subscriber.status == Status(status))
            found = list(db.scalars(query))
            counts = subscriber_store.count_by_status(db)
        return page(
            "subscribers.html",
            found=found[:100],
            more=len(found) > 100,
            q=q,
            chosen_status=status,
            statuses=[s.value for s in Status],
            counts=counts,
        )

    @bp.get("/subscribers/<int:subscriber_id>")
    @admin_only
    def subscriber(subscriber_id: int) -> Response:
        with sessions() as db:
            sub = subscriber_store.get(db, subscriber_id)
            if sub is None:
                abort(404)
            return page(
                "subscriber.html",
                sub=sub,
                events=subscriber_store.events_for(db, sub),
                deliveries=console.deliveries_of(db, sub.id),
                suppressed=subscriber_store.is_suppressed(db, sub.email),
            )

    @bp.route("/subscribers/import", methods=["GET", "POST"])
    @admin_only
    def subscribers_import() -> Response:
        if request.method == "GET":
            return page("import.html", report=None)
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            return page("import.html", 400, report=None, error="Choose a CSV file to import.")
        name = upload.filename
        stream = io.TextIOWrapper(upload.stream, encoding="utf-8-sig", newline="")  # Excel writes a BOM
        try:
            with sessions.begin() as db:
                report = csv_io.import_csv(db, stream, config.regions.order)
        except UnicodeDecodeError as err:
            return page(
                "import.html",
                400,
                report=None,
                error=f"{name} is not UTF-8 text ({err.reason} at byte {err.start}); nothing was imported. "
                "Save it as “CSV UTF-8” and try again.",
            )
        log.info("staff: %s imported %s: %d rows", g.staff.email, name, report.rows)
        return page("import.html", report=report, filename=name)

    # --- schedules (admins; approving a review is an editor's too) ------------------------

    def schedule_form() -> dict[str, str]:
        form = request.form
        return {
            "name": form.get("name", "").strip()[:64],
            "kind": form.get("kind", "weekly"),
            "when": form.get("when", "").strip()[:200],
            "mode": form.get("mode", "send"),
        }

    def trigger_args(form: dict[str, str]) -> dict[str, str]:
        if form["kind"] not in {"weekly", "cron"}:
            raise ScheduleError(f"kind {form['kind']!r}: must be weekly or cron")
        if not form["when"]:
            raise ScheduleError("say when: a day and time such as “fri 09:00”, or the five crontab fields")
        return {form["kind"]: form["when"]}

    def schedules_page(status: int = 200, **extra: Any) -> Response:
        entries, note = console.scheduled_sends(schedules)
        try:
            history = schedules().firings(limit=50)
        except Exception as err:  # noqa: BLE001  shown with the note; the page stays up
            log.exception("cannot read the firing history")
            history, note = [], note or f"cannot read the firings ({err})"
        extra.setdefault("form", {"name": "", "kind": "weekly", "when": "", "mode": "send"})
        return page(
            "schedules.html",
            status,
            entries=entries,
            note=note,
            history=history,
            modes=MODES,
            jobs=jobs.recent()[:5],
            **extra,
        )

    def back_to_schedules(message: str) -> Response:
        flash(message, "notice")
        return redirect(url_for("staff.schedules"), 303)

    @bp.get("/schedules", endpoint="schedules")
    @admin_only
    def schedules_index() -> Response:
        return schedules_page()

    @bp.post("/schedules")
    @admin_only
    def schedule_add() -> Response:
        form = schedule_form()
        try:
            info = schedules().add(form["name"], mode=form["mode"], **trigger_args(form))
        except ScheduleError as err:
            return schedules_page(400, form=form, form_error=str(err))
        log.info("staff: %s added schedule %s (%s, %s)", g.staff.email, info.name, info.trigger, info.mode)
        return back_to_schedules(f"Schedule “{info.name}” added: {info.trigger}, {info.mode}.")

    def schedule_info_or_404(name: str) -> Any:
        try:
            return schedules().get(name)
        except ScheduleError:
            abort(404)

    def schedule_page(name: str, status: int = 200, **extra: Any) -> Response:
        info = schedule_info_or_404(name)
        kind, _sep, when = info.trigger.partition(" ")
        extra.setdefault("form", {"name": info.name, "kind": kind, "when": when, "mode": info.mode})
        return page(
            "schedule.html",
            status,
            info=info,
            history=schedules().firings(info.name, limit=100),
            modes=MODES,
            **extra,
        )

    @bp.get("/schedules/<name>")
    @admin_only
    def schedule(name: str) -> Response:
        return schedule_page(name)

    @bp.post("/schedules/<name>")
    @admin_only
    def schedule_edit(name: str) -> Response:
        schedule_info_or_404(name)
        form = schedule_form()
        form["name"] = name
        try:
            info = schedules().edit(name, mode=form["mode"], **trigger_args(form))
        except ScheduleError as err:
            return schedule_page(name, 400, form=form, form_error=str(err))
        log.info("staff: %s changed schedule %s to %s, %s", g.staff.email, name, info.trigger, info.mode)
        return back_to_schedules(f"Schedule “{name}” is now {info.trigger}, {info.mode}.")

    def schedule_action(name: str, act: Callable[[], str]) -> Response:
        schedule_info_or_404(name)
        try:
            message = act()
        except ScheduleError as err:
            flash(f"Nothing was changed: {err}", "error")
            return redirect(url_for("staff.schedules"), 303)
        log.info("staff: %s: %s", g.staff.email, message)
        return back_to_schedules(message)

    def when(info: Any) -> str:
        if info.next_fire is None:
            return "no next firing"
        return f"next {info.next_fire:%a %d %b %Y %H:%M %Z} ({info.next_fire_utc:%H:%M} UTC)"

    @bp.post("/schedules/<name>/pause")
    @admin_only
    def schedule_pause(name: str) -> Response:
        def pause() -> str:
            schedules().pause(name)
            return f"Schedule “{name}” is paused: it fires nothing until resumed."

        return schedule_action(name, pause)

    @bp.post("/schedules/<name>/resume")
    @admin_only
    def schedule_resume(name: str) -> Response:
        return schedule_action(name, lambda: f"Schedule “{name}” resumed: {when(schedules().resume(name))}.")

    @bp.post("/schedules/<name>/skip")
    @admin_only
    def schedule_skip(name: str) -> Response:
        def skip() -> str:
            before = schedules().get(name).next_fire
            info = schedules().skip_next(name, by=g.staff.email)
            return f"Schedule “{name}”: the firing of {before:%a %d %b %H:%M} is skipped; {when(info)}."

        return schedule_action(name, skip)

    @bp.post("/schedules/<name>/remove")
    @admin_only
    def schedule_remove(name: str) -> Response:
        def remove() -> str:
            schedules().remove(name)
            return f"Schedule “{name}” removed; its history stays below."

        return schedule_action(name, remove)

    @bp.post("/schedules/<name>/run-now")
    @admin_only
    def schedule_run_now(name: str) -> Response:
        schedule_info_or_404(name)
        by = g.staff.email
        service = schedules()

        def run() -> str:
            firing = service.run_now(name, by=by)
            run = f" (run {firing.run_id})" if firing.run_id else ""
            return f"{firing.outcome}{run}: {firing.detail}"

        try:
            with starting:
                job = jobs.start(f"run now: schedule {name}", by, run)
        except ConsoleBusyError as err:
            flash(f"Not started: {err}.", "error")
            return redirect(url_for("staff.schedules"), 303)
        log.info("staff: %s started schedule %s now", by, name)
        flash(
            f"Started at {job.started_at.astimezone(config.tz):%H:%M:%S}: schedule “{name}” is "
            "collecting and sending in the background. Its run shows in the run history.",
            "notice",
        )
        return redirect(url_for("staff.schedules"), 303)

    @bp.post("/approvals")
    def approval() -> Response:
        """Approve (or revoke) the next issue of a review-mode schedule: editors and admins."""
        name = request.form.get("schedule", "")
        back = request.form.get("back", "")
        target = url_for(back if back in APPROVAL_RETURNS else "staff.issue")
        revoke = request.form.get("action") == "revoke"
        try:
            info = schedules().get(name)
            if info.next_issue is None:
                raise ScheduleError(f"schedule {name!r} is paused: it has no next issue to approve")
            if revoke:
                gone = schedules().revoke_approval(info.next_issue)
                message = (
                    f"Approval of the issue of {info.next_issue} revoked: it is held at its time."
                    if gone
                    else f"The issue of {info.next_issue} was not approved."
                )
            else:
                approved = schedules().approve(name, by=g.staff.email)
                message = (
                    f"The issue of {approved.issue} is approved by {approved.approved_by}: "
                    f"it goes out {when(info).removeprefix('next ')}."
                )
        except ScheduleError as err:
            flash(f"Nothing was changed: {err}", "error")
            return redirect(target, 303)
        log.info("staff: %s: %s", g.staff.email, message)
        flash(message, "notice")
        return redirect(target, 303)

    # --- run history (editors read it; admins send again) --------------------------------

    @bp.get("/runs")
    def runs() -> Response:
        with sessions() as db:
            found = console.recent_runs(db, limit=100)
        return page("runs.html", runs=found, jobs=jobs.recent()[:5])

    def run_page(run_id: str, status: int = 200, **extra: Any) -> Response:
        with sessions() as db:
            run = db.get(SendRun, run_id)
            if run is None:
                abort(404)
            record = run_record(db, run, config)
        return page("run.html", status, record=record, jobs=jobs.recent()[:5], **extra)

    @bp.get("/runs/<run_id>")
    def run(run_id: str) -> Response:
        return run_page(run_id)

    def stop_run(run_id: str, act: Callable[[Any], tuple[bool, str]]) -> Response:
        """Pause or abandon: `act(db)` says whether it did, and what; the run's page shows it."""
        with sessions() as db:
            if db.get(SendRun, run_id) is None:
                abort(404)
            done, said = act(db)
        log.info("staff: %s: %s", g.staff.email, said)
        flash(said, "notice" if done else "error")
        return redirect(url_for("staff.run", run_id=run_id), 303)

    @bp.post("/runs/<run_id>/pause")
    def run_pause(run_id: str) -> Response:
        """Pause a run on Celery workers: each stops at its next row (editors too: it loses nothing)."""
        return stop_run(run_id, lambda db: pause_for_staff(db, run_id, g.staff.email))

    def abandon_page(run_id: str, status: int = 200, error: str = "") -> Response:
        with sessions() as db:
            run = db.get(SendRun, run_id)
            if run is None:
                abort(404)
            record = run_record(db, run, config)
        return page("run_abandon.html", status, record=record, error=error)

    @bp.get("/runs/<run_id>/abandon")
    @admin_only
    def run_abandon_confirm(run_id: str) -> Response:
        """Abandon asks on a page of its own (the run's page reloads while the run is running)."""
        return abandon_page(run_id)

    @bp.post("/runs/<run_id>/abandon")
    @admin_only
    def run_abandon(run_id: str) -> Response:
        """Close an unfinished run for good: its pending rows are skipped, workers stop."""
        if request.form.get("confirm") != "yes":
            return abandon_page(run_id, 400, "Nothing was changed: tick the box to confirm.")
        return stop_run(run_id, lambda db: abandon_for_staff(db, run_id))

    @bp.post("/runs/<run_id>/resend")
    @admin_only
    def run_resend(run_id: str) -> Response:
        """ "Send again to these": the chosen failed or unknown rows of a run, and no one else."""
        wanted = set(request.form.getlist("include"))
        include = [s for s in (DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN) if s.value in wanted]
        only = [a.strip() for a in request.form.getlist("only") if a.strip()]
        if not include:
            return run_page(run_id, 400, resend_error="Choose failed or unknown rows to send again to.")
        if request.form.get("selection") == "ticked" and not only:
            return run_page(run_id, 400, resend_error="Tick the rows to send again to first.")
        by = g.staff.email
        try:
            signing_key(config)  # a missing DIGEST_SECRET_KEY is said here, before any row is reopened
        except ConfigError as err:
            return run_page(run_id, 500, resend_error=f"Nothing was changed: {err}.")
        with starting:
            busy = jobs.running()
            if busy is not None:
                return run_page(
                    run_id,
                    409,
                    resend_error=f"Nothing was changed: “{busy.label}” (started by {busy.by}) is still "
                    "running; wait until it has finished.",
                )
            try:
                with sessions() as db:
                    if db.get(SendRun, run_id) is None:
                        abort(404)
                    plan = plan_resume(db, run_id, include=include, only=only)
            except RunBusyError as err:
                log.info("staff: %s: send again to run %s refused: %s", by, run_id, err)
                return run_page(run_id, 409, resend_error=f"Nothing was changed: {err}.")
            if not plan.chosen:
                return run_page(
                    run_id, 200, resend_error="No row of the run matches; nothing was changed or sent."
                )

            def send_again() -> str:
                outcome = send_resumed(config, plan, deliver_quietly)
                report = outcome.report
                done = ", ".join(f"{report.counts[s]} {s}" for s in ("sent", "failed", "unknown", "skipped"))
                paused = f"; paused: {report.reason}" if report.paused else ""
                return f"run {report.run_id}: {done}{paused}"

            kinds = " or ".join(s.value for s in include)
            job = jobs.start(f"send again: {plan.chosen} {kinds} rows of run {run_id}", by, send_again)
        log.info("staff: %s sends again to %d rows of run %s", by, plan.chosen, run_id)
        flash(
            f"Started at {job.started_at.astimezone(config.tz):%H:%M:%S}: sending again to {plan.chosen} "
            f"{'delivery' if plan.chosen == 1 else 'deliveries'} of this run, and no one else.",
            "notice",
        )
        return redirect(url_for("staff.run", run_id=run_id), 303)

    def deliver_quietly(issue: Issue, **kwargs: Any) -> SendOutcome:
        # SEND_STOP: under `digest run`, SIGTERM stops this send at a batch boundary too.
        return send_issue(
            config,
            engine,
            transport_factory(),
            issue=issue,
            console=Console(quiet=True),
            stop=SEND_STOP,
            **kwargs,
        )

    return bp
