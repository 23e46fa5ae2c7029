"""A private MariaDB server for one test module: its own data directory, port and socket, stopped and started at will.

The outage tests stop the database under a running site; the shared server on port 3306 must
never be touched, so they run this one: `mariadb-install-db` lays out a fresh data directory
(root with an empty password, as on a fresh install), and `mariadbd` serves it on a free
loopback port. `stop()` sends SIGTERM and waits for the process to exit; `start()` starts it
again on the same data directory and port. Only the process this object started is ever
signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

MARIADBD = os.environ.get("MARIADBD_PATH", "/usr/sbin/mariadbd")
INSTALL_DB = ("mariadb-install-db", "mysql_install_db")


def missing() -> str | None:
    """Why a private server cannot be started here, or None."""
    if not os.access(MARIADBD, os.X_OK):
        return f"{MARIADBD} is not installed (apt-get install -y mariadb-server)"
    if install_db() is None:
        return "mariadb-install-db is not installed (apt-get install -y mariadb-server)"
    return None


def install_db() -> str | None:
    """The data-directory installer on this machine, or None."""
    for name in INSTALL_DB:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/usr/local/bin")
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateMariaDB:
    """One mariadbd process on a throw-away data directory."""

    def __init__(self):
        # A short path: the socket's path must stay under the 107 bytes a Unix socket name may have.
        self.base = Path(tempfile.mkdtemp(prefix="iib-mdb-"))
        self.datadir = self.base / "data"
        self.socket = self.base / "sock"
        self.log = self.base / "error.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.as_root = hasattr(os, "geteuid") and os.geteuid() == 0

    def install(self) -> None:
        """Lay out the system tables (root@localhost and root@127.0.0.1 with an empty password)."""
        command = [install_db(), "--no-defaults", f"--datadir={self.datadir}",
                   "--auth-root-authentication-method=normal", "--skip-test-db"]
        if self.as_root:
            command.append("--user=root")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                               f"\n{done.stderr[-2000:]}")

    def start(self, timeout: float = 30.0) -> None:
        """Start mariadbd on the data directory and port, and wait until it takes connections."""
        assert self.process is None or self.process.poll() is not None, "the private server is running already"
        command = [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                   "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--pid-file={self.base / 'pid'}",
                   f"--log-error={self.log}", "--skip-name-resolve", "--skip-log-bin",
                   "--innodb-buffer-pool-size=32M", "--max-connections=200", "--character-set-server=utf8mb4",
                   "--collation-server=utf8mb4_unicode_ci"]
        if self.as_root:
            command.append("--user=root")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.admin().close()
                return
            except pymysql.err.MySQLError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not take connections within {timeout} s:\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM (a clean shutdown) and wait for the process to exit; returns the seconds it took."""
        started = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise RuntimeError(f"mariadbd did not stop within {timeout} s of SIGTERM:\n{self.log_tail()}") from None
        return time.monotonic() - started

    @property
    def running(self) -> bool:
        """True while the process this object started is alive."""
        return self.process is not None and self.process.poll() is None

    def admin(self) -> pymysql.Connection:
        """A root connection over TCP, in autocommit mode."""
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", autocommit=True,
                               connect_timeout=2)

    def create_database(self, name: str) -> str:
        """Create a database; return its DATABASE_URL."""
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        finally:
            conn.close()
        return f"mysql://root@127.0.0.1:{self.port}/{name}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's error log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no error log)"

    def destroy(self) -> None:
        """Kill the server if it still runs (SIGKILL: nothing in it is kept) and delete its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)
