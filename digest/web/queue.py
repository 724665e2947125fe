"""Sign-up requests queued in the database, and the background worker that handles them.

POST /subscribe only inserts a `signup_jobs` row (subscribers.store.SignupJob) and answers: the
page and its timing are then the same for every valid address, and nothing that happens later
(lookups, writes, limits, the mail) can change them. A worker thread handles the rows in order.
Because the queue is a table, a request survives a restart: a new process picks up whatever
was left. Several processes can run workers on one database: each job is claimed with a
conditional UPDATE, so exactly one of them handles it; a claim whose process died is taken
over once it is `stale_after` old. A job that fails is retried on later passes, up to
`max_attempts` times in all.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from subscribers.store import SignupJob

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class SignupRequest:
    job_id: int
    email: str
    name: str
    regions: frozenset[str]
    at: datetime  # when the form was sent


Handler = Callable[[SignupRequest], None]


class SignupQueue:
    """The `signup_jobs` table and one worker thread per process that drains it.

    `inline=True` handles each job inside `submit` (the request then waits for it, and its
    timing depends on the address); `run_worker=False` only queues, for a process whose jobs
    another process's worker handles. `join()` waits until a pass that started after the call
    has finished (tests, shutdown).
    """

    def __init__(
        self,
        sessions: sessionmaker,
        handle: Handler,
        *,
        clock: Clock | None = None,
        inline: bool = False,
        run_worker: bool = True,
        max_attempts: int = 5,
        stale_after: timedelta = timedelta(minutes=10),
        retry_seconds: float = 60.0,
        keep_done: timedelta = timedelta(days=1),
        after_pass: Callable[[Session, datetime], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._handle = handle
        self._clock = clock or (lambda: datetime.now(UTC))
        self.inline = inline
        self.run_worker = run_worker and not inline
        self.max_attempts = max_attempts
        self.stale_after = stale_after
        self.retry_seconds = retry_seconds
        self.keep_done = keep_done
        self._after_pass = after_pass
        self._lock = threading.Condition()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = self._completed = 0

    # --- the request side -------------------------------------------------------------

    def submit(self, email: str, name: str, regions: frozenset[str], at: datetime) -> None:
        """Queue one sign-up: a single INSERT, committed before the page is answered."""
        with self._sessions.begin() as db:
            job = SignupJob(
                email=email, name=name, regions=json.dumps(sorted(regions)), created_at=at, attempts=0
            )
            db.add(job)
            db.flush()
            job_id = job.id
        if self.inline:
            self._try(job_id)
        elif self.run_worker:
            self._ensure_thread()
            self._wake.set()

    def start(self) -> None:
        """At start-up: if earlier processes left jobs behind, start the worker on them now."""
        if self.run_worker and self.pending() > 0:
            self._ensure_thread()
            self._wake.set()

    def pending(self) -> int:
        """Jobs not done that may still be tried."""
        with self._sessions() as db:
            return db.scalar(
                select(func.count()).where(
                    SignupJob.done_at.is_(None), SignupJob.attempts < self.max_attempts
                )
            )

    def join(self, timeout: float | None = 30.0) -> None:
        """Wait until a pass that started after this call has finished (no-op without a worker)."""
        if not self.run_worker:
            return
        with self._lock:
            target = self._started + 1
        self._ensure_thread()
        self._wake.set()
        with self._lock:
            self._lock.wait_for(lambda: self._completed >= target, timeout=timeout)

    # --- the worker side --------------------------------------------------------------

    def process_pending(self) -> int:
        """One pass: try each claimable job once, oldest first; returns how many were handled."""
        handled, last_id = 0, 0
        while True:
            with self._sessions() as db:
                job_id = db.scalar(
                    select(SignupJob.id)
                    .where(SignupJob.id > last_id, *self._claimable(self._clock()))
                    .order_by(SignupJob.id)
                    .limit(1)
                )
            if job_id is None:
                break
            last_id = job_id
            handled += self._try(job_id)
        now = self._clock()
        with self._sessions.begin() as db:
            # What a stranger typed is not kept longer than needed.
            db.execute(delete(SignupJob).where(SignupJob.done_at < now - self.keep_done))
            if self._after_pass is not None:
                self._after_pass(db, now)
        return handled

    def _claimable(self, now: datetime) -> tuple:
        return (
            SignupJob.done_at.is_(None),
            SignupJob.attempts < self.max_attempts,
            or_(SignupJob.claimed_at.is_(None), SignupJob.claimed_at < now - self.stale_after),
        )

    def _try(self, job_id: int) -> int:
        """Claim job `job_id` and handle it; 1 if it ran to the end, 0 if not ours or it failed."""
        now = self._clock()
        with self._sessions.begin() as db:
            claimed = db.execute(
                update(SignupJob)
                .where(SignupJob.id == job_id, *self._claimable(now))
                .values(claimed_at=now, attempts=SignupJob.attempts + 1)
                .execution_options(synchronize_session=False)
            ).rowcount
            if claimed != 1:
                return 0  # another worker has it, or it is done
            job = db.get(SignupJob, job_id)
            request = SignupRequest(
                job_id=job.id,
                email=job.email,
                name=job.name,
                regions=frozenset(json.loads(job.regions)),
                at=job.created_at,
            )
            attempts = job.attempts
        try:
            self._handle(request)
        except Exception as err:
            # The log never names the address: staff find the job by its id.
            log.exception("sign-up job %d failed (attempt %d of %d)", job_id, attempts, self.max_attempts)
            with self._sessions.begin() as db:
                db.execute(
                    update(SignupJob)
                    .where(SignupJob.id == job_id)
                    .values(claimed_at=None, last_error=f"{type(err).__name__}: {err}"[:500])
                )
            return 0
        with self._sessions.begin() as db:
            db.execute(update(SignupJob).where(SignupJob.id == job_id).values(done_at=self._clock()))
        return 1

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="digest-signup-worker", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                self._started += 1
            try:
                self.process_pending()
                retry = self.pending() > 0
            except Exception:
                # The database itself failed: stop; the next sign-up or start-up starts a new worker.
                log.exception("sign-up worker stopped")
                with self._lock:
                    self._completed += 1
                    self._lock.notify_all()
                return
            with self._lock:
                self._completed += 1
                self._lock.notify_all()
            # Wait for the next sign-up; with failed or foreign-claimed jobs left, come back for them.
            self._wake.wait(timeout=self.retry_seconds if retry else None)
