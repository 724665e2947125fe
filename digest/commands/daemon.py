"""`digest run`: the long-running process, the scheduler and every web page in one.

The pages are served by waitress (a production WSGI server, pure Python), the schedules fired
by APScheduler's BackgroundScheduler on the same database. SIGTERM or SIGINT: waitress stops
accepting connections and finishes the requests it has (up to 5 s), queued sign-up mails go
out, then the scheduler is shut down waiting for a firing in progress to end. A send that is
killed anyway (SIGKILL, a power cut) is safe: its ledger says who has the issue, and the next
start resumes the unfinished run (see digest.schedule.resume_interrupted).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import suppress
from types import FrameType

from digest import terminal

err_console = terminal.console(stderr=True, highlight=False)
log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the scheduler and serve every web page (waitress), until stopped")
    run.add_argument("--host", help="address to listen on (default: [web] host)")
    run.add_argument("--port", type=int, help="port to listen on (default: [web] port)")
    run.add_argument("--threads", type=int, default=4, help="request threads (default: 4)")
    run.add_argument(
        "--dev-secret",
        action="store_true",
        help="sign links with a fixed, public development secret instead of $DIGEST_SECRET_KEY "
        "(a demo on this machine only: outbox transport, http base_url, loopback host)",
    )
    run.set_defaults(func=cmd_run)


# What staff read in `digest run`'s output: each firing and its outcome (INFO), alerts (WARNING).
FIRING_LOGGERS = ("digest.schedule", "digest.alerts")


def log_firings_on_stdout() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(terminal.LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in FIRING_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False  # once, on stdout; not again on stderr


class _Stop(SystemExit):
    """Raised in the main thread by the signal handler; waitress's loop ends on SystemExit."""


def cmd_run(args: argparse.Namespace) -> int:
    from waitress import create_server

    from digest.commands.serve import web_app
    from digest.schedule import SEND_STOP, ScheduleService

    config, engine, app, host, port = web_app(args)
    # Bind before the scheduler starts: a port in use stops here, with nothing fired.
    try:
        server = create_server(app, host=host, port=port, threads=args.threads)
    except OSError as err:
        err_console.print(f"[bold red]error:[/] cannot listen on {host}:{port}: {err.strerror or err}")
        engine.dispose()
        return 1

    service = ScheduleService(config, engine)
    app.extensions["digest.schedule"] = service
    log_firings_on_stdout()  # the staff console uses the running scheduler
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            return  # already shutting down; a second signal must not break the clean stop
        stopping.set()
        log.info("signal %d: stopping", signum)
        raise _Stop(0)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.start()
        for info in service.list():
            state = "paused" if info.paused else f"next {info.next_fire:%a %Y-%m-%d %H:%M %Z}"
            err_console.print(f"schedule {info.name}: {info.trigger}, {info.mode}, {state}", soft_wrap=True)
        err_console.print(
            f"serving {config.newsletter.name} on http://{host}:{server.effective_port}/ (waitress)",
            soft_wrap=True,
        )
        with suppress(_Stop):
            server.run()  # returns when the signal handler raises _Stop (waitress catches SystemExit)
    finally:
        stopping.set()  # from here on a second signal is ignored: the stop below must complete
        server.close()
        mail = app.extensions.get("digest.mail")
        if mail is not None:
            mail.join()  # "check your inbox" was answered: those confirmation mails still go out
        err_console.print("stopping: waiting for a firing in progress to finish")
        SEND_STOP.set()  # a send in progress stops at a batch boundary and is resumed next start
        service.close(wait=True)
        console_sends = app.extensions.get("digest.console.jobs")
        if console_sends is not None:
            console_sends.join()  # staff's "run now" or "send again", stopped the same way
        engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err_console.print("stopped")
    return 0
