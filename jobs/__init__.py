"""Background work that runs beside the server (and, later, in arq workers)."""

from jobs.targets import GuardedResolver, TargetPolicy, TargetRefused
from jobs.webhooks import Dispatcher, DispatcherSettings

__all__ = ["Dispatcher", "DispatcherSettings", "GuardedResolver", "TargetPolicy", "TargetRefused"]
