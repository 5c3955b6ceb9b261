"""The ``boardcast`` command: ``serve`` and ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Sequence
from typing import Any

import structlog
import uvloop
from aiohttp import web

from server.config import ConfigError, Settings, load_settings, parse_port
from server.embedded import embedded_postgres, embedded_redis
from server.logging import configure_logging

log = structlog.get_logger(__name__)


def _with_services(stack: contextlib.ExitStack, settings: Settings, need_redis: bool = True) -> Settings:
    """Fill in missing URLs with embedded servers (development only; production refused at load).

    SIGTERM's default action ends the process at once, orphaning an embedded PostgreSQL or
    Redis: while they start, a SIGTERM is only noted (interrupting pgserver half-way would
    leave a server nobody stops); once they are on the stack it raises SystemExit, which
    unwinds the stack and stops them. aiohttp's own handler takes over while serving."""
    terminated: list[int] = []
    starting = True

    def on_sigterm(signum: int, frame: object) -> None:
        if starting:
            terminated.append(signum)
        else:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    changes: dict[str, Any] = {}
    if settings.database_url is None:
        changes["database_url"] = stack.enter_context(embedded_postgres(settings.data_dir))
    if need_redis and settings.redis_url is None:
        changes["redis_url"] = stack.enter_context(embedded_redis(settings.data_dir))
    starting = False
    if terminated:
        raise SystemExit(128 + terminated[0])
    return dataclasses.replace(settings, **changes) if changes else settings


def _stopping(signum: int, frame: object) -> None:
    """SIGTERM while already stopping: finish stopping the embedded servers."""


def serve(settings: Settings) -> None:
    from server.app import VERSION, create_app

    with contextlib.ExitStack() as stack:
        settings = _with_services(stack, settings)
        app = create_app(settings)
        log.info("listening", host=settings.host, port=settings.port, env=settings.env, version=VERSION)
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=None,
            shutdown_timeout=10,
            loop=uvloop.new_event_loop(),
        )
        # run_app restored SIGTERM's default action; a second one must not cut the stop short
        signal.signal(signal.SIGTERM, _stopping)
        log.info("stopped")


def run_migrate(settings: Settings) -> None:
    import asyncpg

    from storage import migrate

    async def go(dsn: str) -> list[int]:
        conn = await asyncpg.connect(dsn)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    with contextlib.ExitStack() as stack:
        settings = _with_services(stack, settings, need_redis=False)
        assert settings.database_url is not None
        applied = asyncio.run(go(settings.database_url))
        log.info("migrations_done", applied=applied)


def _port_arg(raw: str) -> int:
    # Flags override variables after validation, so they get the same check here.
    try:
        return parse_port(raw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{raw!r}: {e}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boardcast", description="Realtime collaboration server for boards")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--host", help="bind address (BOARDCAST_HOST)")
    p_serve.add_argument("--port", type=_port_arg, help="port (BOARDCAST_PORT)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    args = parser.parse_args(argv)
    if args.version:
        from server.app import VERSION

        print(f"boardcast {VERSION}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    try:
        settings = load_settings(command=args.command, **overrides)
    except ConfigError as e:
        print(f"boardcast: configuration error: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    from storage import MigrationError

    try:
        if args.command == "serve":
            serve(settings)
        else:
            run_migrate(settings)
    except MigrationError as e:  # a deployment mistake, not a crash: the reason, no traceback
        log.error("migration_refused", reason=str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
