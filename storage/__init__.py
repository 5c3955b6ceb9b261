"""Everything that speaks SQL: the pool, migrations and the board repository."""

from storage.db import create_pool
from storage.migrate import migrate
from storage.repo import Batch, BoardRepo, LoadedBoard, StaleBoard, StoredEvent

__all__ = ["Batch", "BoardRepo", "LoadedBoard", "StaleBoard", "StoredEvent", "create_pool", "migrate"]
