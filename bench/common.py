"""What the bench scripts share: the machine line every report starts with, and Chromium's launch settings."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def machine_line() -> str:
    """Date, machine (cores, RAM, load) and Python: where these numbers come from."""
    try:
        mem_kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")).split()[1])
        ram = f"{mem_kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        ram = "RAM unknown"
    load = "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}, {os.cpu_count()} cores, {ram}, "
            f"Python {platform.python_version()}, {load} at start (a shared machine: other jobs may be running)")


def no_tls_to_database() -> None:
    """What-if (bench only, this process): PyMySQL told not to try TLS, as services/db.py now does over loopback."""
    import functools

    import pymysql.connections

    original = pymysql.connections.Connection.__init__

    @functools.wraps(original)
    def init(self, *args, **kwargs):
        kwargs.setdefault("ssl_disabled", True)
        original(self, *args, **kwargs)

    pymysql.connections.Connection.__init__ = init


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process the bench started: SIGTERM, SIGKILL if it lingers past `timeout`, then close its pipes."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
