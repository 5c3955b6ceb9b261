"""Prometheus metrics for one Boardcast process, on a registry of its own.

Built once by the app and handed to whoever records (the actor system, the WebSocket
endpoint); never a module-level global, so tests can run several servers in one process.
The registry also carries the process (CPU, memory, file descriptors) and Python runtime
(version, garbage collector) collectors that a default registry would have.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# No `<name>_created` series beside every counter and histogram: their timestamps double the
# series count and nothing here reads them (Prometheus gets a process start time from
# process_start_time_seconds). prometheus_client has one switch for the process.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# Activations of boards of a few cards take milliseconds, of 10,000 cards a few hundred.
_ACTIVATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.connections = Gauge("boardcast_ws_connections", "Open WebSocket connections", registry=r)
        self.frames_in = Counter("boardcast_ws_frames_in", "Frames received", ["encoding"], registry=r)
        self.frames_out = Counter("boardcast_ws_frames_out", "Frames sent", ["encoding"], registry=r)
        self.ws_closed = Counter(
            "boardcast_ws_closed", "Connections closed by the server", ["reason"], registry=r
        )
        self.commands = Counter(
            "boardcast_commands", "Board commands by outcome", ["op", "outcome"], registry=r
        )
        self.command_latency = Histogram(
            "boardcast_command_latency_seconds",
            "From command received by the actor to ack",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "boardcast_commit_batch_size",
            "Commands per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.commit_latency = Histogram(
            "boardcast_commit_latency_seconds", "Group commit duration", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.commit_failures = Counter("boardcast_commit_failures", "Failed group commits", registry=r)
        self.commit_splits = Counter(
            "boardcast_commit_splits",
            "Group commits refused for their data and retried in halves to find the command at fault",
            registry=r,
        )
        self.mailbox_depth = Histogram(
            "boardcast_mailbox_depth",
            "Messages waiting in a board's mailbox when it drains",
            buckets=(0, 1, 4, 16, 64, 256, 1024, 4096),
            registry=r,
        )
        self.join_run = Histogram(
            "boardcast_join_run_size",
            "Joins subscribed together with one access read (a run of joins in one mailbox batch)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.activation = Histogram(
            "boardcast_board_activation_seconds",
            "A board actor's start: its epoch claimed, the board read from PostgreSQL and its state built",
            buckets=_ACTIVATION_BUCKETS,
            registry=r,
        )
        self.snapshot_build = Histogram(
            "boardcast_snapshot_build_seconds",
            "A board's snapshot built and encoded for one wire format (once per seq and encoding)",
            ["encoding"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.active_actors = Gauge("boardcast_active_boards", "Board actors in memory", registry=r)
        self.actor_restarts = Counter("boardcast_actor_restarts", "Board actors restarted", registry=r)
        self.http_requests = Counter(
            "boardcast_http_requests", "REST requests", ["method", "status"], registry=r
        )
        self.http_latency = Histogram(
            "boardcast_http_request_duration_seconds",
            "REST request duration by route template and status class (2xx, 4xx, ...)",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limit = Counter(
            "boardcast_rate_limit_decisions",
            "Rate limit decisions by tier and outcome (allowed, limited, fail_open, fail_closed)",
            ["tier", "outcome"],
            registry=r,
        )
        self.rate_limiter_up = Gauge(
            "boardcast_rate_limiter_up", "1 while the Redis rate limiter answers, else 0", registry=r
        )
        self.auth = Counter(
            "boardcast_auth_events",
            "Authentication events (login, register, refresh, token checks) by outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.jwks_fetches = Counter(
            "boardcast_oidc_jwks_fetches",
            "JWKS fetches from the OIDC provider by outcome",
            ["outcome"],
            registry=r,
        )
        self.blob_failures = Counter(
            "boardcast_blob_failures",
            "Blob store operations that failed, by operation (put, get, delete, sign, sweep...)",
            ["op"],
            registry=r,
        )
        self.blob_deleted = Counter(
            "boardcast_blobs_deleted",
            "Blobs deleted by the sweeper: trash (after the commit that dropped them), orphan",
            ["reason"],
            registry=r,
        )
        # ------------------------------------------------------------ several nodes
        self.redis_up = Gauge(
            "boardcast_bus_redis_up", "1 while the command bus reaches Redis, else 0", registry=r
        )
        self.bus_sent = Counter("boardcast_bus_items_sent", "Items sent over the command bus", registry=r)
        self.bus_received = Counter(
            "boardcast_bus_items_received", "Items received from the command bus", registry=r
        )
        self.bus_dropped = Counter(
            "boardcast_bus_items_dropped", "Items dropped because a destination could not keep up", registry=r
        )
        self.bus_gaps = Counter(
            "boardcast_bus_gaps", "Parcels found missing on a link (the receiver resynchronises)", registry=r
        )
        self.bus_lag = Gauge(
            "boardcast_bus_lag_seconds",
            "Age of the newest parcel read from this node's inbox when read",
            registry=r,
        )
        self.forward_latency = Histogram(
            "boardcast_forward_latency_seconds",
            "A request forwarded to a board's owner on another node, until its reply",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.owned_boards = Gauge("boardcast_owned_boards", "Boards whose lease this node holds", registry=r)
        self.remote_viewers = Gauge(
            "boardcast_remote_viewers", "Viewers on other nodes of boards owned here", registry=r
        )
        self.lease_events = Counter(
            "boardcast_lease_events",
            "Board lease events: claimed, refused, renewed, lost, released",
            ["event"],
            registry=r,
        )
        self.failovers = Counter(
            "boardcast_failovers",
            "Boards activated here that were last owned by a node that died or lost its lease",
            registry=r,
        )
        self.resyncs = Counter(
            "boardcast_resyncs",
            "Viewers told to join again (their owner died or moved, or a gap on the bus)",
            ["reason"],
            registry=r,
        )
