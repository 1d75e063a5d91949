"""Helpers for the tests that run the product as real processes and stop them mid-way."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def freeze(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGSTOP ``process`` and return once the kernel reports it stopped.

    A signal is delivered asynchronously: right after ``send_signal`` the process may still run
    for a moment, begin a transaction or commit one more batch. A test that reads the store "as
    the process left it" must wait for the stop itself.
    """
    process.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{process.pid}/stat")
    deadline = time.monotonic() + timeout
    while True:
        # The state follows the command name, which is in parentheses and may hold spaces.
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        assert time.monotonic() < deadline, f"process {process.pid} did not stop (state {state})"
        time.sleep(0.001)


def freeze_when(
    processes: Sequence[subprocess.Popen[str] | subprocess.Popen[bytes]],
    ready: Callable[[], object],
    what: str,
    *,
    timeout: float = 300,
    step: float = 0.05,
) -> None:
    """Leave ``processes`` frozen at the first moment ``ready()`` holds.

    ``ready`` is only ever asked while they are frozen: asked while they run, a true answer could
    be stale by the time the signal lands (a fast process finishing its work meanwhile, more so on
    a busy machine). Between looks they run on for ``step`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"process {process.pid} ended (exit {process.returncode}) before {what}")
            freeze(process)
        if ready():
            return
        assert time.monotonic() < deadline, f"never saw {what} within {timeout:.0f} s"
        for process in processes:
            process.send_signal(signal.SIGCONT)
        time.sleep(step)
