"""`digest serve`: the subscriber web pages (subscribe, confirm, preferences, unsubscribe)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from digest import terminal
from digest.config import Config, load_config
from digest.db import make_engine, migrate
from digest.secret_key import check_dev_secret

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import Engine

err_console = terminal.console(stderr=True)


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve the subscribe, confirm, preferences and unsubscribe pages")
    serve.add_argument("--host", help="address to listen on (default: [web] host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: [web] port)")
    serve.add_argument(
        "--dev-secret",
        action="store_true",
        help="sign links with a fixed, public development secret instead of $DIGEST_SECRET_KEY "
        "(a demo on this machine only: outbox transport, http base_url, loopback host)",
    )
    serve.set_defaults(func=cmd_serve)


def web_app(args: argparse.Namespace) -> tuple[Config, Engine, Flask, str, int]:
    """What `digest serve` and `digest run` share: config, migrated database, the app, where to listen."""
    from digest.web import create_app

    config = load_config(args.config)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    host = args.host or config.web.host
    port = args.port if args.port is not None else config.web.port
    secret_key = None
    if args.dev_secret:
        # Only for a demo on this machine: outbox, http, loopback (ConfigError otherwise).
        secret_key = check_dev_secret(config, host)
        err_console.print(
            "[yellow]warning:[/] --dev-secret: links are signed with a public key; never in production"
        )
    app = create_app(config, engine, secret_key=secret_key)
    return config, engine, app, host, port


def cmd_serve(args: argparse.Namespace) -> int:
    config, engine, app, host, port = web_app(args)
    err_console.print(
        f"serving {config.newsletter.name} subscriber pages on http://{host}:{port}/subscribe", soft_wrap=True
    )
    # Werkzeug's threaded server is enough for sign-ups and unsubscribes of one newsletter;
    # behind a proxy, a WSGI server can run digest.web:create_app_from_environment() instead.
    app.run(host=host, port=port, threaded=True, debug=False, use_reloader=False)
    return 0
