"""Everything that speaks SQL: the pool, migrations and the repositories."""

from storage.db import create_pool
from storage.identity import IdentityRepo
from storage.members import MemberRepo
from storage.migrate import MigrationError, migrate
from storage.repo import Batch, BoardRepo, FencedOut, LoadedBoard, StaleBoard, StoredEvent
from storage.webhooks import WebhookRepo

__all__ = [
    "Batch",
    "BoardRepo",
    "FencedOut",
    "IdentityRepo",
    "LoadedBoard",
    "MemberRepo",
    "MigrationError",
    "StaleBoard",
    "StoredEvent",
    "WebhookRepo",
    "create_pool",
    "migrate",
]
