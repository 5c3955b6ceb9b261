"""Settings are validated once with a message naming the variable, and the `boardcast` command
refuses bad configuration with exit code 2."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.app import VERSION
from server.config import ConfigError, Rate, Settings, documented_variables, load_settings

GOOD_URLS = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/app",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # production also needs a secret of its own (tests/test_auth_modes.py checks the refusals)
    "BOARDCAST_SECRET": "a-test-secret-that-is-long-enough-0123456789",
}

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}
NUMERIC = [
    (var, _DEFAULTS[field])
    for var, field, _ in documented_variables()
    if type(_DEFAULTS[field]) in (int, float)
]
assert len(NUMERIC) >= 15  # an empty list would skip the numeric tests without a word


def refused(environ: dict[str, str], **overrides: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ, **overrides)
    return str(exc.value)


def test_no_variables_gives_the_development_defaults():
    s = load_settings({})
    assert s == Settings()
    assert s.env == "development" and not s.production
    assert s.log_format == "console"
    assert s.database_url is None and s.redis_url is None


def test_every_variable_is_read_into_its_typed_field():
    env = {
        "BOARDCAST_ENV": "production",
        "BOARDCAST_HOST": "0.0.0.0",
        "BOARDCAST_PORT": "9000",
        "BOARDCAST_DATA_DIR": "/var/lib/boardcast",
        "BOARDCAST_LOG_FORMAT": "console",
        "BOARDCAST_LOG_LEVEL": "debug",
        "BOARDCAST_MAX_FRAME_BYTES": "1024",
        "BOARDCAST_MAX_BODY_BYTES": "2048",
        "BOARDCAST_HEARTBEAT_S": "2.5",
        "BOARDCAST_IDLE_TIMEOUT_S": "7.5",
        **GOOD_URLS,
    }
    s = load_settings(env)
    assert s.production and s.host == "0.0.0.0" and s.port == 9000
    assert s.data_dir == Path("/var/lib/boardcast")
    assert s.log_format == "console" and s.log_level == "debug"  # an explicit choice wins
    assert (s.max_frame_bytes, s.max_body_bytes) == (1024, 2048)
    assert (s.heartbeat_s, s.idle_timeout_s) == (2.5, 7.5)
    assert s.database_url == GOOD_URLS["DATABASE_URL"] and s.redis_url == GOOD_URLS["REDIS_URL"]


def test_empty_values_count_as_unset():
    assert load_settings({"BOARDCAST_PORT": "", "DATABASE_URL": ""}) == Settings()


@pytest.mark.parametrize("raw", ["http", "-1", "65536", "80.5", "eighty"])
def test_bad_port_names_the_variable(raw):
    msg = refused({"BOARDCAST_PORT": raw})
    assert "BOARDCAST_PORT" in msg and repr(raw) in msg


@pytest.mark.parametrize("raw", ["staging", "Production", "prod"])
def test_bad_env_names_the_variable(raw):
    assert "BOARDCAST_ENV" in refused({"BOARDCAST_ENV": raw})


RATES = [var for var, field, _ in documented_variables() if isinstance(_DEFAULTS[field], Rate)]


@pytest.mark.parametrize("var", RATES)
@pytest.mark.parametrize(
    "raw", ["600", "600/", "/60", "0/60", "10/0", "-1/60", "ten/60", "10/nan", "10/inf", "1.5/60"]
)
def test_every_rate_refuses_what_is_not_count_per_seconds(var, raw):
    msg = refused({var: raw})
    assert var in msg and "COUNT/SECONDS" in msg, msg


@pytest.mark.parametrize("var", RATES)
def test_every_rate_reads_count_and_seconds(var):
    field = dict((v, f) for v, f, _ in documented_variables())[var]
    assert getattr(load_settings({var: "7/2.5"}), field) == Rate(7, 2.5)


def test_rates_exist_for_every_tier():
    assert set(RATES) == {
        f"BOARDCAST_RATE_{t}" for t in ("READS", "WRITES", "AUTH", "WS_COMMANDS", "PRESENCE")
    }


def test_trusted_proxies_are_addresses_or_networks():
    s = load_settings({"BOARDCAST_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7,::1"})
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    assert "BOARDCAST_TRUSTED_PROXIES" in refused({"BOARDCAST_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"})


@pytest.mark.parametrize(("var", "raw"), [("BOARDCAST_RATE_LIMIT", "maybe"), ("BOARDCAST_AUTH", "basic")])
def test_switches_refuse_other_values(var, raw):
    assert var in refused({var: raw})


def test_oidc_needs_all_three_settings():
    msg = refused({"BOARDCAST_OIDC_ISSUER": "https://id.example.com/"})
    assert "BOARDCAST_OIDC_AUDIENCE" in msg and "BOARDCAST_OIDC_JWKS_URL" in msg


@pytest.mark.parametrize(("var", "raw"), [("BOARDCAST_LOG_FORMAT", "xml"), ("BOARDCAST_LOG_LEVEL", "loud")])
def test_bad_choices_name_the_variable(var, raw):
    msg = refused({var: raw})
    assert var in msg and "must be one of" in msg


@pytest.mark.parametrize(("var", "default"), NUMERIC, ids=[v for v, _ in NUMERIC])
@pytest.mark.parametrize("raw", ["abc", "64k", "1MB", "-1", "0", "nan", "inf", "-inf", ""])
def test_every_numeric_setting_refuses_non_numbers_and_non_positive_values(var, default, raw):
    if raw == "":
        assert load_settings({var: raw}) == Settings()  # unset
        return
    if var == "BOARDCAST_PORT":
        if raw == "0":
            assert load_settings({var: raw}).port == 0  # any free port
            return
        if raw in ("nan", "inf", "-inf"):
            refused({var: raw})
            return
    msg = refused({var: raw})
    assert var in msg, msg


@pytest.mark.parametrize(("var", "default"), NUMERIC, ids=[v for v, _ in NUMERIC])
def test_every_numeric_setting_accepts_a_sensible_value(var, default):
    env = {var: str(default * 2) if var != "BOARDCAST_PORT" else "8081"}
    if var == "BOARDCAST_HEARTBEAT_S":
        env["BOARDCAST_IDLE_TIMEOUT_S"] = str(default * 10)
    s = load_settings(env)
    field = dict((v, f) for v, f, _ in documented_variables())[var]
    assert getattr(s, field) == type(default)(env[var])


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("DATABASE_URL", "mysql://root@localhost/app"),
        ("DATABASE_URL", "127.0.0.1:5432"),
        ("DATABASE_URL", "postgresql:/missing-slash"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("REDIS_URL", "localhost:6379"),
    ],
)
def test_bad_url_schemes_name_the_variable(var, raw):
    msg = refused({var: raw})
    assert var in msg and "must start with" in msg


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db"])
def test_both_postgres_schemes_are_accepted(url):
    assert load_settings({"DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h/0", "unix:///tmp/redis.sock"])
def test_redis_schemes_are_accepted(url):
    assert load_settings({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(("idle", "heartbeat"), [("10", "20"), ("20", "20"), ("5", None)])
def test_idle_timeout_must_exceed_heartbeat(idle, heartbeat):
    env = {"BOARDCAST_IDLE_TIMEOUT_S": idle}
    if heartbeat is not None:
        env["BOARDCAST_HEARTBEAT_S"] = heartbeat
    msg = refused(env)
    assert "BOARDCAST_IDLE_TIMEOUT_S" in msg and "BOARDCAST_HEARTBEAT_S" in msg


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, ["DATABASE_URL", "REDIS_URL"]),
        ({"DATABASE_URL": GOOD_URLS["DATABASE_URL"]}, ["REDIS_URL"]),
        ({"REDIS_URL": GOOD_URLS["REDIS_URL"]}, ["DATABASE_URL"]),
    ],
)
def test_production_refuses_to_run_without_real_databases(given, missing):
    msg = refused({"BOARDCAST_ENV": "production", **given})
    for var in ("DATABASE_URL", "REDIS_URL"):
        assert (var in msg) == (var in missing), msg


def test_production_migrate_needs_only_database_url():
    production = {"BOARDCAST_ENV": "production"}
    s = load_settings({**production, "DATABASE_URL": GOOD_URLS["DATABASE_URL"]}, command="migrate")
    assert s.production and s.redis_url is None  # and the default secret is no matter: it signs nothing
    msg = refused(production, command="migrate")
    assert "DATABASE_URL" in msg and "REDIS_URL" not in msg
    # values are still checked, and serving still needs everything
    assert "BOARDCAST_PORT" in refused({**production, "BOARDCAST_PORT": "x"}, command="migrate")
    msg = refused({**production, "DATABASE_URL": GOOD_URLS["DATABASE_URL"]})
    assert "REDIS_URL" in msg
    assert "BOARDCAST_SECRET" in refused({**production, **GOOD_URLS, "BOARDCAST_SECRET": ""})


def test_allowed_origins_are_normalised_origins():
    s = load_settings({"BOARDCAST_ALLOWED_ORIGINS": "https://Boards.Example.com/, http://127.0.0.1:3000"})
    assert s.allowed_origins == ("https://boards.example.com", "http://127.0.0.1:3000")
    for bad in ("boards.example.com", "ftp://x", "https://x/app", "https://u@x", "https://x?q=1"):
        msg = refused({"BOARDCAST_ALLOWED_ORIGINS": f"https://ok.example, {bad}"})
        assert "BOARDCAST_ALLOWED_ORIGINS" in msg and "not an origin" in msg, msg


def test_production_logs_json_by_default_and_development_console():
    assert load_settings({"BOARDCAST_ENV": "production", **GOOD_URLS}).log_format == "json"
    assert load_settings({"BOARDCAST_ENV": "development", **GOOD_URLS}).log_format == "console"
    assert load_settings(
        {"BOARDCAST_ENV": "production", "BOARDCAST_LOG_FORMAT": "console", **GOOD_URLS}
    ).log_format == ("console")


def test_the_process_environment_is_the_default_source(monkeypatch):
    monkeypatch.setenv("BOARDCAST_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="BOARDCAST_PORT"):
        load_settings()
    monkeypatch.setenv("BOARDCAST_PORT", "9123")
    assert load_settings().port == 9123


# ------------------------------------------------------------------ the command


def boardcast_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("boardcast")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any Boardcast setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOARDCAST_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*boardcast_cmd(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_version(tmp_path):
    done = run(["--version"], clean_env(), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"boardcast {VERSION}"


def test_module_entry_point_is_the_same_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "--version"],
        env=clean_env(),
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"boardcast {VERSION}"


def test_no_command_prints_help_and_exits_2(tmp_path):
    done = run([], clean_env(), tmp_path)
    assert done.returncode == 2
    assert "serve" in done.stdout and "migrate" in done.stdout


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("BOARDCAST_PORT", "eighty"),
        ("BOARDCAST_ENV", "staging"),
        ("BOARDCAST_MAX_BODY_BYTES", "-1"),
        ("DATABASE_URL", "mysql://x"),
        ("BOARDCAST_IDLE_TIMEOUT_S", "1"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(tmp_path, command, var, raw):
    env = clean_env(BOARDCAST_DATA_DIR=str(tmp_path / "data"), **{var: raw})
    done = run([command], env, tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "configuration error" in done.stderr and var in done.stderr
    assert "Traceback" not in done.stderr
    # refused before anything was started: no embedded database was created
    assert not (tmp_path / "data").exists()


def test_production_without_urls_exits_2(tmp_path):
    done = run(
        ["serve"], clean_env(BOARDCAST_ENV="production", BOARDCAST_DATA_DIR=str(tmp_path / "d")), tmp_path
    )
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr and "REDIS_URL" in done.stderr
    assert not (tmp_path / "d").exists()


def test_production_migrate_without_database_url_exits_2_naming_only_it(tmp_path):
    done = run(
        ["migrate"], clean_env(BOARDCAST_ENV="production", BOARDCAST_DATA_DIR=str(tmp_path / "d")), tmp_path
    )
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr and "REDIS_URL" not in done.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("port", ["70000", "-5", "http"])
def test_a_bad_port_flag_exits_2(tmp_path, port):
    done = run(["serve", "--port", port], clean_env(BOARDCAST_DATA_DIR=str(tmp_path / "d")), tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--port" in done.stderr
    assert not (tmp_path / "d").exists()
