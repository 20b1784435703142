"""What every nubes command shares: logging, the event loop, config errors."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from nubes import exception

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

#: Exit code of a command refused for its configuration or arguments.
EXIT_CONFIG_ERROR = 2


def setup_logging(debug: bool) -> None:
    from nubes.context import RequestIdFilter

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=LOG_FORMAT)
    # On the handlers, so records of every logger (uvicorn's too) get the id.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    # aiormq logs every frame at debug; that drowns out our own lines.
    logging.getLogger("aiormq").setLevel(logging.INFO)


def run(coro: Coroutine[Any, Any, int | None]) -> int:
    """Run ``coro`` on uvloop when it is installed, else on asyncio's loop."""
    from nubes.service import tune_gc

    tune_gc()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        try:
            return runner.run(coro) or 0
        except KeyboardInterrupt:
            return 0
        except exception.ConfigError as exc:
            # A port in use, a bad option found late: one line, not a traceback.
            return fail_config(exc)


def fail_config(exc: exception.ConfigError) -> int:
    print(f"nubes: {exc.message}", file=sys.stderr)
    return EXIT_CONFIG_ERROR
