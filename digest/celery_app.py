"""The Celery app, built from digest.toml: one task, `digest.send_rows(run_id, first, last)`.

Imported only in celery mode (`pip install 'digest[celery]'`): the in-process send never
loads Celery. The app is configured so a worker that dies mid-task gives the task back:
acknowledged late, rejected on a lost worker, one task prefetched at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from digest.config import Config, secret
from digest.errors import ConfigError

TASK_NAME = "digest.send_rows"


def broker_url(config: Config) -> str:
    """DIGEST_CELERY_BROKER_URL (for a URL with a password in it), else [celery] broker_url."""
    url = secret("celery_broker_url") or config.celery.broker_url
    if not url:
        raise ConfigError(
            config.path,
            "[celery] broker_url",
            'is needed with [send] workers = "celery" (or set DIGEST_CELERY_BROKER_URL), '
            "e.g. amqp://guest:guest@127.0.0.1:5672// or redis://127.0.0.1:6379/0",
        )
    return url


def make_app(config: Config, context_factory: Callable[[Config], Any] | None = None) -> Any:
    """A Celery app for this config. A worker's app (`context_factory` given: in `digest worker`,
    `digest.pipeline.worker_context`) builds its context on the first task; a sender's app only
    enqueues tasks. The factory comes from above so this module never imports the pipeline
    (which imports it to enqueue)."""
    try:
        from celery import Celery
    except ImportError:
        raise ConfigError(
            config.path,
            "[send] workers",
            "\"celery\" needs Celery installed: pip install 'digest[celery]'",
        ) from None

    app = Celery("digest", broker=broker_url(config), set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged when done: a killed worker's task comes back
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds one task, not a queue of them
        task_default_queue=config.celery.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # progress lives in the ledger, not in a result backend
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Redis redelivers an unacknowledged task only after this long (RabbitMQ at once, when
        # the dead worker's connection closes).
        broker_transport_options={"visibility_timeout": config.celery.visibility_timeout},
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    state: dict[str, Any] = {}

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
    def send_rows(run_id: str, first: int, last: int) -> dict[str, int]:
        if "context" not in state:
            if context_factory is None:
                raise ConfigError(config.path, "[celery]", "this app only enqueues: run `digest worker`")
            state["context"] = context_factory(config)
        return state["context"].send_rows(run_id, first, last)

    return app


def enqueuer(config: Config) -> Any:
    """`enqueue(run_id, ranges)`: one task per id range, on the configured queue."""
    app = make_app(config)

    def enqueue(run_id: str, ranges: Sequence[tuple[int, int]]) -> None:
        task = app.tasks[TASK_NAME]
        for first, last in ranges:
            task.apply_async((run_id, first, last))

    return enqueue


def run_worker(config: Config, context_factory: Callable[[Config], Any], argv: Sequence[str] = ()) -> None:
    """Start a worker in this process (blocks). One task at a time unless --concurrency says so."""
    from digest.distributed import require_postgres

    require_postgres(config)
    app = make_app(config, context_factory)
    app.worker_main(["worker", "--loglevel=INFO", *argv])
