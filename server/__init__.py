"""The aiohttp surface and process wiring."""

from server.app import VERSION, create_app
from server.config import ConfigError, Settings, load_settings

__all__ = ["VERSION", "ConfigError", "Settings", "create_app", "load_settings"]
