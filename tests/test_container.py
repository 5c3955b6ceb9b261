"""What the Docker image runs, run outside Docker (no engine here): the Dockerfile's
ENTRYPOINT + CMD with its production environment, its HEALTHCHECK command, and the compose
file's services and commands."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import free_port
from tests.test_newcomer import boardcast_cmd, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
pytestmark = pytest.mark.timeout(120)


def _runtime_stage() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]


def _json_instruction(name: str) -> list[str]:
    m = re.search(rf"^{name} (\[.*\])$", _runtime_stage(), re.M)
    assert m, f"no exec-form {name} in the runtime stage"
    value: list[str] = json.loads(m.group(1))
    return value


def _image_env() -> dict[str, str]:
    stage = _runtime_stage()
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", stage, re.M)
    assert block
    pairs = re.findall(r"(\w+)=(\S+)", block.group(1))
    return dict(pairs)


def test_the_image_runs_as_a_non_root_user_with_production_settings() -> None:
    assert re.search(r"^USER (?!root)\w+", _runtime_stage(), re.M)
    env = _image_env()
    assert env["BOARDCAST_ENV"] == "production" and env["BOARDCAST_LOG_FORMAT"] == "json"
    assert _json_instruction("ENTRYPOINT") == ["boardcast"]
    assert _json_instruction("CMD") == ["serve"]


async def test_the_image_command_serves_and_passes_its_healthcheck(database_url, redis_url, tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOARDCAST_")}
    env.update(_image_env())
    # Tests bind only to loopback; the image binds 0.0.0.0 inside its own network namespace.
    env.update(BOARDCAST_HOST="127.0.0.1", BOARDCAST_PORT=str(port))
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    env.update(BOARDCAST_SECRET="an-operator-provided-secret-0123456789abcdef")  # compose passes it in
    log = tmp_path / "serve-1.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *boardcast_cmd(), *_json_instruction("CMD"), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(proc, f"http://127.0.0.1:{port}", http, tmp_path)
        # The HEALTHCHECK command itself, pointed at this port.
        m = re.search(r"^HEALTHCHECK [^[]*?CMD (\[[^\n]*\])$", _runtime_stage(), re.M)
        assert m, "no HEALTHCHECK CMD in the runtime stage"
        check = json.loads(m.group(1))
        script = check[-1].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        done = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        assert await done.wait() == 0
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    # Production logs are JSON lines.
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(json.loads(line)["event"] == "listening" for line in lines), log.read_text()


def test_production_refuses_to_start_without_database_urls(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(_image_env())
    done = subprocess.run([*boardcast_cmd(), "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr and "production" in done.stderr


def test_compose_runs_postgres_redis_a_migration_and_the_server() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "server"} <= set(services)
    assert services["migrate"]["command"] == ["migrate"]
    assert services["server"]["command"] == ["serve"]
    env = services["server"]["environment"]
    assert env["BOARDCAST_ENV"] == "production"
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    # The signing secret comes from the operator's environment, never from the file.
    assert env["BOARDCAST_SECRET"].startswith("${BOARDCAST_SECRET:?")
    assert services["server"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
