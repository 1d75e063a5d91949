"""Helpers for the tests that run the product as real processes and stop them mid-way."""

from __future__ import annotations

import signal
import subprocess
import time
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
