"""structlog set-up: readable console lines in development, JSON lines in production.

Boardcast's own events go through structlog straight to stderr. Libraries log through stdlib
``logging`` (aiohttp's server errors, asyncpg's pool, asyncio): their records are rendered by
the same processors through :class:`structlog.stdlib.ProcessorFormatter`, so a JSON log is one
JSON object per line, tracebacks included (as an ``exception`` string), whoever wrote it.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(fmt: str, level: str) -> None:
    level_no = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    final: list[structlog.types.Processor]
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        # a traceback becomes one string field: a multi-line traceback would break the lines
        final = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        final = [renderer]
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_no)
    # Python warnings (asyncpg reports some through them) are log records too.
    logging.captureWarnings(True)
