"""The command line run inside the test process (typer's CliRunner): the same code as the console
script without an interpreter start. Use a subprocess only where the process itself is the point
(signals, a terminal, a server that must answer)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping

from typer.testing import CliRunner, Result

from crm_perf_sync.cli import app


def invoke(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """Run ``crm-perf-sync ARGS`` with ``env`` added to the environment; stdout and stderr apart.

    A command configures the root logger and may install signal handlers: both are put back
    afterwards so the next test starts from the same process state.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return CliRunner().invoke(app, list(args), env=dict(env or {}), catch_exceptions=False)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
