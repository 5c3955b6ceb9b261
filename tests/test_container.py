"""What the Docker image runs, run outside Docker (no engine here): the Dockerfile's
ENTRYPOINT + CMD with its production environment, its HEALTHCHECK command, its dependency
layer; and the compose file, validated against the Compose Specification's JSON schema, its
variables documented in .env.example and its environments accepted by the settings."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from server.config import load_settings
from tests.conftest import free_port
from tests.test_newcomer import boardcast_cmd, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
pytestmark = pytest.mark.timeout(120)


def _runtime_stage() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]


def _builder_stage() -> str:
    return DOCKERFILE[DOCKERFILE.index("\nFROM ") : DOCKERFILE.rindex("\nFROM ")]


def _instructions(stage: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    lines = [line for line in stage.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
    return found


def _healthcheck_script() -> str:
    m = re.search(r"^HEALTHCHECK [^[]*?CMD (\[[^\n]*\])$", _runtime_stage(), re.M)
    assert m, "no HEALTHCHECK CMD in the runtime stage"
    check: list[str] = json.loads(m.group(1))
    assert check[:2] == ["python", "-c"]
    return check[-1]


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
            # The HEALTHCHECK command itself, as Docker runs it: in the container's
            # environment, where BOARDCAST_PORT says where the server listens.
            script = _healthcheck_script()
            done = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env)
            assert await done.wait() == 0
            # it follows the variable: pointed elsewhere, it fails
            elsewhere = {**env, "BOARDCAST_PORT": str(free_port())}
            done = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, env=elsewhere, stderr=subprocess.DEVNULL
            )
            assert await done.wait() != 0
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


def test_compose_runs_postgres_redis_a_migration_two_nodes_and_a_proxy() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "server-1", "server-2", "proxy"} <= set(services)
    assert services["migrate"]["command"] == ["migrate"]
    assert services["server-1"] == services["server-2"]  # the same node twice
    assert services["server-1"]["command"] == ["serve"]
    assert "ports" not in services["server-1"]  # only the proxy is published
    proxy = services["proxy"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert set(proxy["depends_on"]) == {"server-1", "server-2"}
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server server-1:8080" in conf and "server server-2:8080" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf  # WebSocket upgrades pass through
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    env = services["server-1"]["environment"]
    assert env["BOARDCAST_ENV"] == "production"
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    # The signing secret comes from the operator's environment, never from the file.
    assert env["BOARDCAST_SECRET"].startswith("${BOARDCAST_SECRET:?")
    assert services["server-1"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


# ------------------------------------------------------------------ the dependency layer


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    """A source change must not invalidate the dependency layer: everything copied before the
    dependencies are installed is pyproject.toml alone, and the project's own install after the
    source COPY installs no dependency."""
    steps = _instructions(_builder_stage())
    copies = [i for i, (kw, _) in enumerate(steps) if kw == "COPY"]
    source = next(i for i in copies if "." in steps[i][1].split()[:-1])  # `COPY . .`
    deps = next(i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "pip install -r" in args)
    assert deps < source, "dependencies are installed after the source is copied"
    for i in copies:
        if i < deps:
            assert steps[i][1].split()[:-1] == ["pyproject.toml"], steps[i]
    after = [args for kw, args in steps[source + 1 :] if kw == "RUN" and "pip install" in args]
    assert after and all("--no-deps" in args for args in after), after
    assert all("pip check" in args for args in after)


def test_the_dependency_layer_installs_what_pyproject_declares(tmp_path: Path) -> None:
    """The layer's command run here, in a folder holding only pyproject.toml, as the builder
    stage does: the list it writes is the project's dependencies, and each is satisfied by the
    environment that runs this test suite."""
    (deps,) = [
        args for kw, args in _instructions(_builder_stage()) if kw == "RUN" and "pip install -r" in args
    ]
    command = deps.split(" && pip install")[0].replace("/tmp/requirements.txt", str(tmp_path / "req.txt"))
    work = tmp_path / "src"
    work.mkdir()
    shutil.copy(ROOT / "pyproject.toml", work)
    python_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{python_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", command], cwd=work, env=env, check=True, timeout=60)
    listed = (tmp_path / "req.txt").read_text().split()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed == declared
    for line in listed:
        req = Requirement(line)
        assert req.specifier.contains(metadata.version(req.name), prereleases=True), line
    assert Requirement("redis[hiredis]>=5,<6") in {Requirement(x) for x in declared}
    assert not [x for x in declared if Requirement(x).name == "hiredis"], "hiredis comes with redis[hiredis]"


# ------------------------------------------------------------------ compose

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's interpolation, applied as compose does to every string of the parsed file:
    ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, and $$ for $."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        found = variables.get(name)
        empty = found is None or (op is not None and op.startswith(":") and found == "")
        if op in (":?", "?") and empty:
            raise ValueError(f"{name}: {arg}")
        if op in (":-", "-") and empty:
            return arg
        return found or ""

    if isinstance(value, dict):
        return {k: _interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, variables) for v in value]
    if isinstance(value, str):
        return "$".join(_VARIABLE.sub(one, part) for part in value.split("$$"))
    return value


def _compose(variables: dict[str, str]) -> dict[str, Any]:
    interpolated: dict[str, Any] = _interpolate(yaml.safe_load(COMPOSE_TEXT), variables)
    return interpolated


def _env_example() -> dict[str, tuple[str, bool]]:
    """VAR -> (value shown, whether the line is commented out: a default left as it is)."""
    found = {}
    for line in ENV_EXAMPLE.splitlines():
        m = re.match(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            found[m.group(2)] = (m.group(3), m.group(1) is not None)
    return found


def _compose_schema() -> dict[str, Any]:
    # The Compose Specification's schema, as check-jsonschema vendors it.
    schema = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    loaded: dict[str, Any] = json.loads(schema.read_text())
    return loaded


def test_compose_validates_against_the_compose_specification() -> None:
    schema = _compose_schema()
    raw = yaml.safe_load(COMPOSE_TEXT)
    assert "version" not in raw  # obsolete in Compose v2, which warns about it
    jsonschema.validate(raw, schema)
    variables = {"BOARDCAST_SECRET": "s" * 48}
    interpolated = _compose(variables)
    jsonschema.validate(interpolated, schema)
    with pytest.raises(ValueError, match="BOARDCAST_SECRET"):
        _compose({})  # `docker compose up` refuses to run without it
    services = interpolated["services"]
    assert services["proxy"]["ports"] == ["8080:8080"]
    assert (
        services["postgres"]["healthcheck"]["test"][1]
        == 'pg_isready -U "${POSTGRES_USER}" -d "${POSTGRES_DB}"'
    )


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = {m.group(1): m for m in _VARIABLE.finditer(COMPOSE_TEXT.replace("$$", ""))}
    documented = _env_example()
    assert set(used) == set(documented), (sorted(used), sorted(documented))
    for name, m in used.items():
        shown, commented = documented[name]
        if m.group(2) in (":?", "?"):
            assert not commented and shown == "", f"{name} is required: an uncommented, empty line"
        else:
            # a commented line shows the default compose falls back to
            assert commented and shown == (m.group(3) or ""), (name, shown, m.group(3))
        # and a comment above says what it is
        before = ENV_EXAMPLE[: ENV_EXAMPLE.index(f"{name}=")].rstrip("# ").splitlines()
        assert before and before[-1].startswith("#"), name


def test_compose_environments_pass_the_settings_of_their_command() -> None:
    """What each service gets, after interpolation with the .env.example defaults and a secret,
    is accepted by load_settings for its command; migrate gets no Redis and no secret."""
    variables = {name: value for name, (value, _) in _env_example().items()}
    variables["BOARDCAST_SECRET"] = "an-operator-provided-secret-0123456789abcdef"
    services = _compose(variables)["services"]
    server_env = {k: str(v) for k, v in services["server-1"]["environment"].items()}
    migrate_env = {k: str(v) for k, v in services["migrate"]["environment"].items()}
    assert load_settings(server_env, command="serve").production
    assert set(migrate_env) == {"BOARDCAST_ENV", "DATABASE_URL"}
    assert load_settings(migrate_env, command="migrate").database_url == server_env["DATABASE_URL"]
    db = services["postgres"]["environment"]
    assert server_env["DATABASE_URL"] == (
        f"postgresql://{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}@postgres:5432/{db['POSTGRES_DB']}"
    )


def test_the_env_file_stays_out_of_git_and_of_the_image() -> None:
    for ignore in (".gitignore", ".dockerignore"):
        assert ".env" in (ROOT / ignore).read_text().split(), ignore
