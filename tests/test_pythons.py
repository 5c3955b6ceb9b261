"""The newcomer's path on every Python the README claims: `make run` with that interpreter in
a fresh virtual environment installs, starts the embedded PostgreSQL and Redis, and serves.

Slow (a virtual environment and an install each, from pip's cache after the first run), so not
part of `make test`: `make test-pythons` runs it, and CI does (.ci/run). Selected with
`-m pythons`; a Python missing from the machine is skipped, saying where it was looked for.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.conftest import free_port
from tests.services import private_data_root
from tests.test_newcomer import kill_leftovers, newcomer_env, processes_of

REPO = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12", "3.13")  # the README's claim and the Makefile's SUPPORTED_PYTHONS

pytestmark = [pytest.mark.pythons, pytest.mark.timeout(420)]


def find_python(version: str) -> str | None:
    """A pyenv build of it (the project's machines have those), else python3.X on PATH; one
    that runs and is that version (a pyenv shim for a version not selected does not run)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    candidates += [p for p in [shutil.which(f"python{version}")] if p]
    for candidate in candidates:
        ran = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if ran.returncode == 0 and ran.stdout.strip() == version:
            return candidate
    return None


def read(path: Path) -> str:
    return path.read_text()


def test_the_makefile_lists_the_same_pythons() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert f"SUPPORTED_PYTHONS := {' '.join(PYTHONS)}\n" in makefile


@pytest.mark.parametrize("version", PYTHONS)
async def test_make_run_serves_with_embedded_servers(version: str) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"Python {version} not installed (not in ~/.pyenv/versions, no python{version} on PATH)")
    port = free_port()
    # outside pytest's temporary tree, for the embedded PostgreSQL run as another user when
    # root (tests/services.py says why); the virtual environment holds its binaries
    with private_data_root(f"boardcast-py{version}-") as root:
        venv, data = root / "venv", root / "data"
        env = newcomer_env(data, BOARDCAST_PORT=str(port), BOARDCAST_HOST="127.0.0.1")
        env.pop("MAKEFLAGS", None)
        env.pop("VIRTUAL_ENV", None)
        log_path = root / "make.log"
        with log_path.open("wb") as log:
            make = await asyncio.create_subprocess_exec(
                "make", "-C", str(REPO), "run", f"PYTHON={python}", f"VENV={venv}",
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            async with aiohttp.ClientSession() as http:
                health = await wait_for_health(make, f"http://127.0.0.1:{port}/health", http, log_path)
            assert health["postgres"]["ok"] is True and health["redis"]["ok"] is True, health
            assert f"version = {version}." in read(venv / "pyvenv.cfg")
            # `make run` installs what running needs, not the dev tools
            assert not (venv / "bin" / "pytest").exists() and not (venv / "bin" / "mypy").exists()

            children = psutil.Process(make.pid).children(recursive=True)
            serve = [p for p in children if p.cmdline()[-2:] == [str(venv / "bin" / "boardcast"), "serve"]]
            assert len(serve) == 1, [p.cmdline() for p in children]
            serve[0].send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                code = await make.wait()
            output = read(log_path)
            assert code == 0, output
            assert "Traceback" not in output, output
            psutil.wait_procs(processes_of(data), timeout=15)
            assert processes_of(data) == []
        finally:
            if make.returncode is None:
                for child in psutil.Process(make.pid).children(recursive=True):
                    child.kill()
                make.kill()
                await make.wait()
            kill_leftovers(data)


async def wait_for_health(
    make: asyncio.subprocess.Process, url: str, http: aiohttp.ClientSession, log_path: Path
) -> dict:
    """Poll /health while make installs and starts; fail at once if make exits."""
    async with asyncio.timeout(360):  # a first run downloads the wheels
        while True:
            if make.returncode is not None:
                raise AssertionError(f"make run exited with {make.returncode}:\n{read(log_path)}")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        body: dict = await r.json()
                        return body
            except (aiohttp.ClientConnectionError, TimeoutError):
                pass
            # an install gives no event to wait on: poll the port gently
            await asyncio.sleep(0.5)
