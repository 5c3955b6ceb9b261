"""``boardcast serve --processes N``: N nodes on one machine sharing one listening port.

One Python process uses one core. The parent resolves the databases (embedded ones in
development), applies the migrations once, then starts N ``boardcast serve`` children that
each bind the same port with SO_REUSEPORT, so the kernel spreads new connections over them.
Each child is a full node of the cluster (its own node id, leases and inbox): a board lives
in one of them and the others forward to it over Redis, exactly as between machines.

The parent supervises: a child that dies is started again after a short pause (its boards
fail over to its siblings meanwhile); SIGTERM or SIGINT is passed on to every child, which
hands its boards off and stops, and the parent waits for them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import structlog

from server.config import Settings

log = structlog.get_logger(__name__)

_RESTART_PAUSE_S = 1.0
_STOP_TIMEOUT_S = 30.0


def child_env(settings: Settings) -> dict[str, str]:
    assert settings.database_url and settings.redis_url
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        BOARDCAST_HOST=settings.host,
        BOARDCAST_PORT=str(settings.port),
        BOARDCAST_REUSE_PORT="on",
    )
    return env


def supervise(settings: Settings, count: int) -> int:
    """Run ``count`` children until SIGTERM/SIGINT; returns the exit status."""
    env = child_env(settings)
    command = [sys.executable, "-m", "server.cli", "serve"]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("processes_stopping", signal=signal.Signals(signum).name)
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(index: int) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(command, env=env)
        log.info("process_started", index=index, pid=child.pid)
        return child

    children = [start(i) for i in range(count)]
    restart_at: dict[int, float] = {}
    while not stopping:
        time.sleep(0.1)
        for i, child in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            due = restart_at.get(i)
            if due is None:
                log.warning("process_died", index=i, pid=child.pid, code=code)
                restart_at[i] = time.monotonic() + _RESTART_PAUSE_S
            elif time.monotonic() >= due:
                del restart_at[i]
                children[i] = start(i)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    status = 0
    for child in children:
        try:
            code = child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("process_kill", pid=child.pid)
            child.kill()
            code = child.wait()
        status = status or (code if code > 0 else 0)
    log.info("processes_stopped")
    return status
