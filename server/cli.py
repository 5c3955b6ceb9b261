"""The ``boardcast`` command: ``serve``, ``migrate`` and ``watch``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import structlog
import uvloop
from aiohttp import web

from server.config import ConfigError, Settings, load_settings, parse_port
from server.embedded import EmbeddedUnavailable, embedded_postgres, embedded_redis
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


class StartupError(Exception):
    """Serving cannot start for a reason the operator can fix: the message is one line that
    names the cause and the fix, printed instead of a traceback."""


def _port_in_use(settings: Settings) -> StartupError:
    return StartupError(
        f"port {settings.port} on {settings.host} is already in use; "
        "stop the other process or set BOARDCAST_PORT (or --port)"
    )


def _bind_error(settings: Settings, e: OSError) -> StartupError:
    if e.errno == errno.EADDRINUSE:
        return _port_in_use(settings)
    return StartupError(
        f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}; "
        "set BOARDCAST_HOST / BOARDCAST_PORT (or --host / --port)"
    )


def _check_port(settings: Settings) -> None:
    """Fail in milliseconds, before the embedded servers start, when the port is taken.

    Binds each address the host resolves to the way the server will (SO_REUSEADDR, so a port
    whose old connections linger in TIME_WAIT is free) and closes it again. Another process can
    still take the port before the server binds: that error is caught where it binds."""
    try:
        infos = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise StartupError(f"cannot resolve BOARDCAST_HOST {settings.host!r}: {e.strerror}") from None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(addr)
            except OSError as e:
                raise _bind_error(settings, e) from None


def _stopping(signum: int, frame: object) -> None:
    """SIGTERM while already stopping: finish stopping the embedded servers."""


def serve(settings: Settings) -> None:
    from server.app import VERSION, create_app

    if not settings.reuse_port:  # siblings of `--processes` already listen on it
        _check_port(settings)

    bound = False

    def listening(_banner: str) -> None:
        # run_app calls this once every site is bound: only then is the server listening
        nonlocal bound
        bound = True
        log.info("listening", host=settings.host, port=settings.port, env=settings.env, version=VERSION)

    with contextlib.ExitStack() as stack:
        settings = _with_services(stack, settings)
        app = create_app(settings)
        try:
            web.run_app(
                app,
                host=settings.host,
                port=settings.port,
                print=listening,
                access_log=None,
                # After a deploy every viewer reconnects at once: with aiohttp's default of 128
                # the accept queue overflows and those clients wait for the kernel's 1 s SYN
                # retry (bench/ reconnect_storm). The kernel caps it at net.core.somaxconn.
                backlog=4096,
                reuse_port=settings.reuse_port or None,
                shutdown_timeout=10,
                loop=uvloop.new_event_loop(),
            )
        except OSError as e:
            # taken between the check and the bind (the event loop's message says "bind");
            # any other OSError, from start-up or later, keeps its traceback
            if bound or "bind" not in str(e):
                raise
            raise _bind_error(settings, e) from None
        # run_app restored SIGTERM's default action; a second one must not cut the stop short
        signal.signal(signal.SIGTERM, _stopping)
        log.info("stopped")


def serve_many(settings: Settings, count: int) -> int:
    """``serve --processes N``: migrate once, then N nodes sharing the port (server/processes)."""
    from server.processes import supervise

    _check_port(settings)
    with contextlib.ExitStack() as stack:
        settings = _with_services(stack, settings)
        run_migrate(settings)
        return supervise(settings, count)


def send_command(settings: Settings, board_id: str, command: str, author: str | None, rid: str | None) -> int:
    """``boardcast command``: one command to a board through the command bus (no server
    connection needed, only Redis); prints its ack as JSON."""
    import msgspec

    from protocol.commands import Command
    from protocol.errors import BoardcastError
    from protocol.model import dec_hook
    from server.access import DEV_USER_ID
    from server.node import BoardClient

    if settings.redis_url is None:
        print(
            "boardcast: REDIS_URL must be set: commands travel over the deployment's Redis", file=sys.stderr
        )
        return 2
    try:
        bid = uuid.UUID(board_id)
        who = uuid.UUID(author) if author else DEV_USER_ID
        cmd = msgspec.json.decode(command, type=Command, dec_hook=dec_hook)
    except (ValueError, msgspec.DecodeError) as e:
        print(f"boardcast: bad command: {e}", file=sys.stderr)
        return 2

    async def go() -> int:
        async with BoardClient(settings) as client:
            try:
                result = await client.execute(bid, who, cmd, rid=rid)
            except BoardcastError as e:
                print(json.dumps({"error": {"code": e.code, "message": e.message}}))
                return 1
        print(json.dumps({"seq": result.seq, "duplicate": result.duplicate}))
        return 0

    return asyncio.run(go())


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


def _count_arg(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 256:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be a whole number 1-256")
    return int(raw)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boardcast", description="Realtime collaboration server for boards")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--host", help="bind address (BOARDCAST_HOST)")
    p_serve.add_argument("--port", type=_port_arg, help="port (BOARDCAST_PORT)")
    p_serve.add_argument(
        "--processes",
        type=_count_arg,
        default=1,
        help="nodes to run on this machine, sharing the port (default 1)",
    )
    sub.add_parser("migrate", help="apply database migrations and exit")
    p_watch = sub.add_parser("watch", help="follow a board live, one line per event")
    p_watch.add_argument("board_id", metavar="BOARD_ID")
    p_watch.add_argument("--token", help="access or API token (BOARDCAST_TOKEN)")
    p_watch.add_argument("--url", default=None, help="WebSocket URL (default ws://127.0.0.1:8080/ws)")
    p_cmd = sub.add_parser("command", help="send one command to a board through the bus and print its ack")
    p_cmd.add_argument("board_id", metavar="BOARD_ID")
    p_cmd.add_argument(
        "command_json", metavar="JSON", help='e.g. \'{"op": "column.create", "title": "Done"}\''
    )
    p_cmd.add_argument("--author", help="user id the command is made by (default: the development user)")
    p_cmd.add_argument("--rid", help="request id: a retry with the same one is never applied twice")
    args = parser.parse_args(argv)
    if args.version:
        from server.app import VERSION

        print(f"boardcast {VERSION}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "watch":
        from server.watch import DEFAULT_URL, run_watch

        token = args.token or os.environ.get("BOARDCAST_TOKEN")
        return run_watch(args.board_id, token, args.url or DEFAULT_URL)
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    try:
        settings = load_settings(command=args.command, **overrides)
    except ConfigError as e:
        print(f"boardcast: configuration error: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    from storage import MigrationError

    try:
        if args.command == "serve" and args.processes > 1:
            return serve_many(settings, args.processes)
        if args.command == "serve":
            serve(settings)
        elif args.command == "command":
            return send_command(settings, args.board_id, args.command_json, args.author, args.rid)
        else:
            run_migrate(settings)
    except (StartupError, EmbeddedUnavailable) as e:
        print(f"boardcast: {e}", file=sys.stderr)
        return 1
    except MigrationError as e:  # a deployment mistake, not a crash: the reason, no traceback
        log.error("migration_refused", reason=str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
