"""`digest worker`: a Celery worker that sends the rows of distributed runs (see README)."""

from __future__ import annotations

import argparse

from digest.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser(
        "worker", help='send rows of runs started with [send] workers = "celery" (a Celery worker)'
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="tasks at once in this worker (default 1; each sends with the transport's own pool)",
    )
    worker.add_argument("--name", default="", help="the worker's Celery node name (default digest@HOST)")
    worker.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from digest.celery_app import run_worker
    from digest.pipeline import worker_context

    config = load_config(args.config)
    argv = [f"--concurrency={max(args.concurrency, 1)}"]
    # One task at a time runs in the worker's own process: killing it stops its sending at once.
    argv.append("--pool=solo" if args.concurrency <= 1 else "--pool=prefork")
    argv.append(f"--hostname={args.name or 'digest@%h'}")
    argv.append("--without-gossip")
    argv.append("--without-mingle")
    run_worker(config, worker_context, argv)
    return 0
