"""Settings: read from the environment in one place, validated once, passed down frozen."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A bad setting; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    env: str = "development"  # development | production
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".boardcast-data")
    log_format: str = "console"  # console | json
    log_level: str = "info"
    max_frame_bytes: int = 65_536
    max_body_bytes: int = 1_048_576
    # bytes a peer may leave unread (beyond the kernel's socket buffer) before it is closed
    # as a slow consumer
    outbound_buffer_bytes: int = 1_048_576
    heartbeat_s: float = 20.0
    idle_timeout_s: float = 60.0
    passivate_s: float = 60.0
    recent_events: int = 1024
    max_resume_events: int = 10_000
    ask_timeout_s: float = 10.0
    db_pool_max: int = 10
    presence_rate_per_s: float = 20.0
    presence_burst: int = 20

    @property
    def production(self) -> bool:
        return self.env == "production"


# variable -> (field, parser); each parser raises ValueError with a human reason.
def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = kind(raw)
        # `not 0 < value < inf` also refuses "nan" and "inf", which float() accepts
        if not 0 < value < math.inf:  # type: ignore[operator]
            raise ValueError("must be a finite number greater than 0")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw

    return parse


def parse_port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535")
    return value


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not raw.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse


_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "BOARDCAST_ENV": ("env", _choice("development", "production")),
    "BOARDCAST_HOST": ("host", str),
    "BOARDCAST_PORT": ("port", parse_port),
    "DATABASE_URL": ("database_url", _url("postgresql", "postgres")),
    "REDIS_URL": ("redis_url", _url("redis", "rediss", "unix")),
    "BOARDCAST_DATA_DIR": ("data_dir", Path),
    "BOARDCAST_LOG_FORMAT": ("log_format", _choice("console", "json")),
    "BOARDCAST_LOG_LEVEL": ("log_level", _choice("debug", "info", "warning", "error")),
    "BOARDCAST_MAX_FRAME_BYTES": ("max_frame_bytes", _positive(int)),
    "BOARDCAST_MAX_BODY_BYTES": ("max_body_bytes", _positive(int)),
    "BOARDCAST_OUTBOUND_BUFFER_BYTES": ("outbound_buffer_bytes", _positive(int)),
    "BOARDCAST_HEARTBEAT_S": ("heartbeat_s", _positive(float)),
    "BOARDCAST_IDLE_TIMEOUT_S": ("idle_timeout_s", _positive(float)),
    "BOARDCAST_PASSIVATE_S": ("passivate_s", _positive(float)),
    "BOARDCAST_RECENT_EVENTS": ("recent_events", _positive(int)),
    "BOARDCAST_MAX_RESUME_EVENTS": ("max_resume_events", _positive(int)),
    "BOARDCAST_ASK_TIMEOUT_S": ("ask_timeout_s", _positive(float)),
    "BOARDCAST_DB_POOL_MAX": ("db_pool_max", _positive(int)),
    "BOARDCAST_PRESENCE_RATE_PER_S": ("presence_rate_per_s", _positive(float)),
    "BOARDCAST_PRESENCE_BURST": ("presence_burst", _positive(int)),
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment; raises ConfigError naming the bad variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var, (field, parse) in _VARIABLES.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[field] = parse(raw)
        except ValueError as e:
            raise ConfigError(f"{var}={raw!r}: {e}") from None
    if "log_format" not in values and values.get("env") == "production":
        values["log_format"] = "json"
    values.update(overrides)
    settings = Settings(**values)
    if settings.production:
        missing = [
            v
            for v, f in (("DATABASE_URL", "database_url"), ("REDIS_URL", "redis_url"))
            if getattr(settings, f) is None
        ]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} must be set when BOARDCAST_ENV=production "
                "(embedded databases are for development only)"
            )
    if settings.idle_timeout_s <= settings.heartbeat_s:
        raise ConfigError("BOARDCAST_IDLE_TIMEOUT_S must be greater than BOARDCAST_HEARTBEAT_S")
    return settings


def documented_variables() -> list[tuple[str, str, Any]]:
    """(variable, field, default) for every setting: the README's table is checked against it."""
    defaults = {f.name: f.default for f in fields(Settings)}
    return [(var, field, defaults[field]) for var, (field, _) in _VARIABLES.items()]
