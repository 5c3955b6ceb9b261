"""Settings: read from the environment in one place, validated once, passed down frozen."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(Exception):
    """A bad setting; the message names the variable."""


DEFAULT_SECRET = "boardcast-development-secret-do-not-use-in-production"
MIN_SECRET_LENGTH = 32

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``period_s`` seconds: bursts up to ``count``, refilled evenly."""

    count: int
    period_s: float

    @classmethod
    def parse(cls, raw: str) -> Rate:
        count, sep, period = raw.partition("/")
        try:
            rate = cls(int(count), float(period)) if sep else None
        except ValueError:
            rate = None
        if rate is None or rate.count < 1 or not 0 < rate.period_s < math.inf:
            raise ValueError("must be COUNT/SECONDS, such as 600/60")
        return rate

    def __str__(self) -> str:
        return f"{self.count}/{self.period_s:g}"


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def _origins(raw: str) -> tuple[str, ...]:
    """Comma-separated ``scheme://host[:port]`` origins, as browsers send them: lower-cased,
    without a trailing slash; anything with a path, query or credentials is refused."""
    found = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        url = urlsplit(part)
        if (
            url.scheme not in ("http", "https")
            or not url.hostname
            or url.path not in ("", "/")
            or url.query
            or url.fragment
            or "@" in url.netloc
        ):
            raise ValueError(f"{part!r} is not an origin such as https://boards.example.com")
        found.append(f"{url.scheme}://{url.netloc.lower()}")
    return tuple(found)


_MEDIA_PATTERN = re.compile(r"[a-z0-9][a-z0-9.+-]*/([a-z0-9][a-z0-9.+-]*\*?|\*)")


def _media_types(raw: str) -> tuple[str, ...]:
    """Comma-separated media types (``image/png``), a type with any subtype (``image/*``) or a
    prefix of subtypes (``application/vnd.openxmlformats-officedocument.*``)."""
    found = []
    for part in (p.strip().lower() for p in raw.split(",")):
        if not part:
            continue
        if _MEDIA_PATTERN.fullmatch(part) is None:
            raise ValueError(f"{part!r} is not a media type such as image/png or image/*")
        found.append(part)
    if not found:
        raise ValueError("must name at least one media type")
    return tuple(found)


# What may be uploaded by default: what the content sniffer recognises as media, documents and
# archives, and UTF-8 text. Never served inline as HTML: see server/api/attachments.py.
DEFAULT_BLOB_TYPES = (
    "image/*",
    "video/*",
    "audio/*",
    "application/pdf",
    "text/plain",
    "application/zip",
    "application/gzip",
    "application/x-tar",
    "application/x-7z-compressed",
    "application/vnd.openxmlformats-officedocument.*",
    "application/vnd.oasis.opendocument.*",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/rtf",
)


def _on_off(raw: str) -> bool:
    if raw not in ("on", "off"):
        raise ValueError("must be on or off")
    return raw == "on"


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
    # history (server/api/history.py): a stored snapshot every this many seqs
    history_snapshot_every: int = 500
    # the largest import document accepted (POST /api/v1/boards/import)
    import_max_bytes: int = 33_554_432
    ask_timeout_s: float = 10.0
    db_pool_max: int = 10
    # identity (docs/ACCESS.md)
    auth: str = "jwt"  # jwt | none (development: everyone is the development user)
    secret: str = dataclasses.field(default=DEFAULT_SECRET, repr=False)  # never printed or logged
    access_token_ttl_s: float = 900.0
    refresh_token_ttl_s: float = 30 * 86400.0
    jwt_issuer: str = "boardcast"
    jwt_audience: str = "boardcast"
    session_check_s: float = 5.0
    password_hash_profile: str = "default"  # default | fast (tests and development only)
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_jwks_cache_s: float = 3600.0
    # rate limiting
    rate_limit: bool = True
    rate_reads: Rate = Rate(600, 60)
    rate_writes: Rate = Rate(300, 60)
    rate_auth: Rate = Rate(10, 60)
    rate_ws_commands: Rate = Rate(100, 1)
    rate_presence: Rate = Rate(20, 1)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # pages that may open a cookie-authenticated WebSocket besides the server's own host
    allowed_origins: tuple[str, ...] = ()
    redis_prefix: str = "bc"
    # several nodes (README "Several nodes"): a Redis Cluster, the board lease, node heartbeats
    redis_cluster: bool = False
    reuse_port: bool = False  # bind with SO_REUSEPORT (set by `serve --processes N` for its children)
    lease_ttl_s: float = 2.0
    lease_renew_s: float = 0.5
    node_heartbeat_s: float = 0.5
    node_ttl_s: float = 2.0
    # outgoing webhooks (docs/WEBHOOKS.md)
    webhook_dispatch: bool = True  # this process delivers webhooks (any number of processes may)
    webhook_allow_private: bool = False  # deliver to loopback, private and other internal ranges
    webhook_allowed_networks: tuple[IPNetwork, ...] = ()  # internal ranges allowed all the same
    webhook_poll_s: float = 0.5
    webhook_timeout_s: float = 10.0
    webhook_max_response_bytes: int = 65_536
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_max_s: float = 900.0
    webhook_max_failures: int = 25  # consecutive failed attempts before the webhook is disabled
    webhook_max_failing_s: float = 86_400.0  # or failing for this long without a success
    webhook_concurrency: int = 16  # webhooks one process delivers to at once
    webhook_lease_s: float = 60.0
    # blobs: attachments and generated artifacts (storage/blobs)
    blob_store: str = "local"  # local | s3
    blob_dir: Path | None = None  # local store; None: <data_dir>/blobs
    blob_max_bytes: int = 26_214_400  # largest upload (25 MiB)
    blob_allowed_types: tuple[str, ...] = DEFAULT_BLOB_TYPES
    blob_url_ttl_s: float = 300.0  # lifetime of a signed download URL
    blob_orphan_grace_s: float = 3600.0  # an unreferenced blob younger than this is kept
    blob_sweep_interval_s: float = 600.0
    blob_s3_bucket: str | None = None
    blob_s3_endpoint_url: str | None = None  # an S3-compatible service; None: AWS
    blob_s3_region: str = "us-east-1"
    blob_s3_access_key_id: str | None = None  # None: the usual AWS credential chain
    blob_s3_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    blob_s3_prefix: str = ""  # keys are stored under this prefix in the bucket
    # on: downloads redirect to S3 presigned URLs; off: the server streams them from the bucket
    # under its own signed link (a bucket browsers cannot reach; nosniff wanted)
    blob_s3_presign: bool = True

    @property
    def blob_root(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"

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


def _s3_prefix(raw: str) -> str:
    if re.fullmatch(r"([A-Za-z0-9_-][A-Za-z0-9._-]*/)*", raw) is None:
        raise ValueError("must be folder names each ending in /, such as boardcast/")
    return raw


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
    "BOARDCAST_HISTORY_SNAPSHOT_EVERY": ("history_snapshot_every", _positive(int)),
    "BOARDCAST_IMPORT_MAX_BYTES": ("import_max_bytes", _positive(int)),
    "BOARDCAST_ASK_TIMEOUT_S": ("ask_timeout_s", _positive(float)),
    "BOARDCAST_DB_POOL_MAX": ("db_pool_max", _positive(int)),
    "BOARDCAST_AUTH": ("auth", _choice("jwt", "none")),
    "BOARDCAST_SECRET": ("secret", str),
    "BOARDCAST_ACCESS_TOKEN_TTL_S": ("access_token_ttl_s", _positive(float)),
    "BOARDCAST_REFRESH_TOKEN_TTL_S": ("refresh_token_ttl_s", _positive(float)),
    "BOARDCAST_JWT_ISSUER": ("jwt_issuer", str),
    "BOARDCAST_JWT_AUDIENCE": ("jwt_audience", str),
    "BOARDCAST_SESSION_CHECK_S": ("session_check_s", _positive(float)),
    "BOARDCAST_PASSWORD_HASH_PROFILE": ("password_hash_profile", _choice("default", "fast")),
    "BOARDCAST_OIDC_ISSUER": ("oidc_issuer", str),
    "BOARDCAST_OIDC_AUDIENCE": ("oidc_audience", str),
    "BOARDCAST_OIDC_JWKS_URL": ("oidc_jwks_url", _url("https", "http")),
    "BOARDCAST_OIDC_JWKS_CACHE_S": ("oidc_jwks_cache_s", _positive(float)),
    "BOARDCAST_RATE_LIMIT": ("rate_limit", _on_off),
    "BOARDCAST_RATE_READS": ("rate_reads", Rate.parse),
    "BOARDCAST_RATE_WRITES": ("rate_writes", Rate.parse),
    "BOARDCAST_RATE_AUTH": ("rate_auth", Rate.parse),
    "BOARDCAST_RATE_WS_COMMANDS": ("rate_ws_commands", Rate.parse),
    "BOARDCAST_RATE_PRESENCE": ("rate_presence", Rate.parse),
    "BOARDCAST_TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "BOARDCAST_ALLOWED_ORIGINS": ("allowed_origins", _origins),
    "BOARDCAST_REDIS_PREFIX": ("redis_prefix", str),
    "BOARDCAST_BLOB_STORE": ("blob_store", _choice("local", "s3")),
    "BOARDCAST_BLOB_DIR": ("blob_dir", Path),
    "BOARDCAST_BLOB_MAX_BYTES": ("blob_max_bytes", _positive(int)),
    "BOARDCAST_BLOB_ALLOWED_TYPES": ("blob_allowed_types", _media_types),
    "BOARDCAST_BLOB_URL_TTL_S": ("blob_url_ttl_s", _positive(float)),
    "BOARDCAST_BLOB_ORPHAN_GRACE_S": ("blob_orphan_grace_s", _positive(float)),
    "BOARDCAST_BLOB_SWEEP_INTERVAL_S": ("blob_sweep_interval_s", _positive(float)),
    "BOARDCAST_BLOB_S3_BUCKET": ("blob_s3_bucket", str),
    "BOARDCAST_BLOB_S3_ENDPOINT_URL": ("blob_s3_endpoint_url", _url("https", "http")),
    "BOARDCAST_BLOB_S3_REGION": ("blob_s3_region", str),
    "BOARDCAST_BLOB_S3_ACCESS_KEY_ID": ("blob_s3_access_key_id", str),
    "BOARDCAST_BLOB_S3_SECRET_ACCESS_KEY": ("blob_s3_secret_access_key", str),
    "BOARDCAST_BLOB_S3_PREFIX": ("blob_s3_prefix", _s3_prefix),
    "BOARDCAST_BLOB_S3_PRESIGN": ("blob_s3_presign", _on_off),
    "BOARDCAST_REDIS_CLUSTER": ("redis_cluster", _on_off),
    "BOARDCAST_REUSE_PORT": ("reuse_port", _on_off),
    "BOARDCAST_LEASE_TTL_S": ("lease_ttl_s", _positive(float)),
    "BOARDCAST_LEASE_RENEW_S": ("lease_renew_s", _positive(float)),
    "BOARDCAST_NODE_HEARTBEAT_S": ("node_heartbeat_s", _positive(float)),
    "BOARDCAST_NODE_TTL_S": ("node_ttl_s", _positive(float)),
    "BOARDCAST_WEBHOOK_DISPATCH": ("webhook_dispatch", _on_off),
    "BOARDCAST_WEBHOOK_ALLOW_PRIVATE": ("webhook_allow_private", _on_off),
    "BOARDCAST_WEBHOOK_ALLOWED_NETWORKS": ("webhook_allowed_networks", _networks),
    "BOARDCAST_WEBHOOK_POLL_S": ("webhook_poll_s", _positive(float)),
    "BOARDCAST_WEBHOOK_TIMEOUT_S": ("webhook_timeout_s", _positive(float)),
    "BOARDCAST_WEBHOOK_MAX_RESPONSE_BYTES": ("webhook_max_response_bytes", _positive(int)),
    "BOARDCAST_WEBHOOK_BACKOFF_BASE_S": ("webhook_backoff_base_s", _positive(float)),
    "BOARDCAST_WEBHOOK_BACKOFF_MAX_S": ("webhook_backoff_max_s", _positive(float)),
    "BOARDCAST_WEBHOOK_MAX_FAILURES": ("webhook_max_failures", _positive(int)),
    "BOARDCAST_WEBHOOK_MAX_FAILING_S": ("webhook_max_failing_s", _positive(float)),
    "BOARDCAST_WEBHOOK_CONCURRENCY": ("webhook_concurrency", _positive(int)),
    "BOARDCAST_WEBHOOK_LEASE_S": ("webhook_lease_s", _positive(float)),
}


# What each command needs in production; a command not listed gets the strictest, serve's.
_REQUIRED_URLS = {
    "serve": (("DATABASE_URL", "database_url"), ("REDIS_URL", "redis_url")),
    "migrate": (("DATABASE_URL", "database_url"),),
    "command": (("REDIS_URL", "redis_url"),),
}


def load_settings(
    environ: Mapping[str, str] | None = None, *, command: str = "serve", **overrides: Any
) -> Settings:
    """Build settings from the environment; raises ConfigError naming the bad variable.

    Every value is checked for every command; what production *requires* depends on the
    command: ``migrate`` needs only DATABASE_URL (no Redis, no signing secret)."""
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
        required = _REQUIRED_URLS.get(command, _REQUIRED_URLS["serve"])
        missing = [v for v, f in required if getattr(settings, f) is None]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} must be set when BOARDCAST_ENV=production "
                "(embedded databases are for development only)"
            )
    # `migrate` signs no token and serves nobody: the identity rules of production are serve's
    _check_identity(settings, production=settings.production and command not in ("migrate", "command"))
    if settings.lease_renew_s >= settings.lease_ttl_s:
        raise ConfigError("BOARDCAST_LEASE_RENEW_S must be shorter than BOARDCAST_LEASE_TTL_S")
    if settings.node_heartbeat_s >= settings.node_ttl_s:
        raise ConfigError("BOARDCAST_NODE_HEARTBEAT_S must be shorter than BOARDCAST_NODE_TTL_S")
    if "{" in settings.redis_prefix or "}" in settings.redis_prefix:
        raise ConfigError("BOARDCAST_REDIS_PREFIX must not contain '{' or '}' (Redis Cluster hash tags)")
    _check_blobs(settings)
    if settings.idle_timeout_s <= settings.heartbeat_s:
        raise ConfigError("BOARDCAST_IDLE_TIMEOUT_S must be greater than BOARDCAST_HEARTBEAT_S")
    if settings.webhook_lease_s <= 2 * settings.webhook_timeout_s:
        # A lease must outlive a delivery with room to renew it, or two processes could
        # deliver the same webhook at once (out of order).
        raise ConfigError("BOARDCAST_WEBHOOK_LEASE_S must be more than twice BOARDCAST_WEBHOOK_TIMEOUT_S")
    if settings.webhook_backoff_max_s < settings.webhook_backoff_base_s:
        raise ConfigError("BOARDCAST_WEBHOOK_BACKOFF_MAX_S must be at least BOARDCAST_WEBHOOK_BACKOFF_BASE_S")
    return settings


def _check_blobs(settings: Settings) -> None:
    if settings.blob_store == "s3" and not settings.blob_s3_bucket:
        raise ConfigError("BOARDCAST_BLOB_STORE=s3 needs BOARDCAST_BLOB_S3_BUCKET")
    keys = (settings.blob_s3_access_key_id, settings.blob_s3_secret_access_key)
    if any(keys) and not all(keys):
        raise ConfigError(
            "BOARDCAST_BLOB_S3_ACCESS_KEY_ID and BOARDCAST_BLOB_S3_SECRET_ACCESS_KEY go together"
        )


def _check_identity(settings: Settings, *, production: bool) -> None:
    oidc = {
        "BOARDCAST_OIDC_ISSUER": settings.oidc_issuer,
        "BOARDCAST_OIDC_AUDIENCE": settings.oidc_audience,
        "BOARDCAST_OIDC_JWKS_URL": settings.oidc_jwks_url,
    }
    if any(oidc.values()) and not all(oidc.values()):
        missing = ", ".join(k for k, v in oidc.items() if not v)
        raise ConfigError(f"OIDC needs issuer, audience and JWKS URL together: {missing} not set")
    if not production:
        return
    if settings.auth == "none":
        raise ConfigError("BOARDCAST_AUTH=none is for development only; not allowed in production")
    if settings.secret == DEFAULT_SECRET:
        raise ConfigError("BOARDCAST_SECRET must be set in production (the default is public)")
    if len(settings.secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"BOARDCAST_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    if settings.password_hash_profile != "default":
        raise ConfigError("BOARDCAST_PASSWORD_HASH_PROFILE=fast is for tests; not allowed in production")


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, field, default as the README shows it) for every setting: the README's table
    is checked against it."""
    defaults = {f.name: f.default for f in fields(Settings)}

    def shown(value: Any) -> str:
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return ", ".join(map(str, value)) or "none"
        return str(value)

    return [(var, field, shown(defaults[field])) for var, (field, _) in _VARIABLES.items()]
