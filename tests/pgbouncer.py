"""PgBouncer in transaction pool mode in front of a local PostgreSQL, for tests (Neon's ``-pooler`` endpoint).

Two uses:

* ``PgBouncer(socket_dir)`` is a context manager that starts Debian's ``pgbouncer`` on a free loopback port
  in front of the server listening on ``socket_dir`` (the embedded server's unix socket folder) and stops it
  on exit; ``url(dbname)`` is the client URL.
* ``python tests/pgbouncer.py [pytest args]`` runs the whole test suite through it: a fresh embedded server
  in a temporary folder, PgBouncer in front, ``TEST_DATABASE_URL`` pointing at PgBouncer and
  ``SONY_RAG_TRANSACTION_POOLER=true``; everything it started is stopped and deleted at the end.
  ``scripts/test-through-pgbouncer.sh`` calls this.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

TEST_DATABASE = "sony_rag_test"


def pgbouncer_available() -> bool:
    """Return True when a ``pgbouncer`` executable is on PATH."""
    return _pgbouncer_executable() is not None


def _pgbouncer_executable() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as_user(socket_dir: Path) -> str | None:
    """Return the system user PgBouncer must switch to (it refuses to run as root), or None when not root."""
    if os.geteuid() != 0:
        return None
    # pgserver runs PostgreSQL as 'pgserver' when started by root, and its socket folder (the data folder)
    # is private to that user: only that user can reach the socket.
    owner = pwd.getpwuid(socket_dir.stat().st_uid).pw_name
    return owner if owner != "root" else "nobody"


class PgBouncer:
    """A PgBouncer process in transaction pool mode on 127.0.0.1, in front of one local server."""

    def __init__(self, socket_dir: str | Path, *, server_port: int = 5432, pool_size: int = 40,
                 settings: Mapping[str, str] | None = None) -> None:
        """Prepare (but do not start) PgBouncer for the server in ``socket_dir``; ``settings`` add to its ini."""
        self.socket_dir = Path(socket_dir)
        self.server_port = server_port
        self.pool_size = pool_size
        self.settings = dict(settings or {})
        self.port = 0
        self._folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """Return the URL a client uses to reach ``dbname`` through PgBouncer."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}?sslmode=disable"

    def start(self) -> PgBouncer:
        """Start PgBouncer and wait until it accepts connections; raises RuntimeError if it does not."""
        executable = _pgbouncer_executable()
        if executable is None:
            raise RuntimeError("pgbouncer is not installed (Debian: apt-get install -y pgbouncer)")
        self._folder = Path(tempfile.mkdtemp(prefix="sony-rag-pgbouncer-"))
        self.port = _free_port()
        user = _run_as_user(self.socket_dir)
        config = self._folder / "pgbouncer.ini"
        (self._folder / "userlist.txt").write_text('"postgres" ""\n')
        config.write_text("\n".join([
            "[databases]",
            # The wildcard forwards every database name, so tests may create databases and use them at once.
            f"* = host={self.socket_dir} port={self.server_port} user=postgres",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self._folder / 'userlist.txt'}",
            "admin_users = postgres",
            "pool_mode = transaction",
            "max_client_conn = 2000",
            f"default_pool_size = {self.pool_size}",
            "server_reset_query =",
            # psycopg sends no startup options in pooler mode; anything else sent would be refused loudly.
            "ignore_startup_parameters = extra_float_digits",
            # One line per login would fill the log (and, in the foreground, stderr) during a test run.
            "log_connections = 0",
            "log_disconnections = 0",
            f"logfile = {self._folder / 'pgbouncer.log'}",
            f"pidfile = {self._folder / 'pgbouncer.pid'}",
            *(f"{name} = {value}" for name, value in self.settings.items()),
            "",
        ]))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self._folder, entry.pw_uid, entry.pw_gid)
            for path in self._folder.iterdir():
                os.chown(path, entry.pw_uid, entry.pw_gid)
        command = [executable, *(["-u", user] if user else []), str(config)]
        # In the foreground PgBouncer also logs to stderr: a pipe nobody reads would fill and freeze it.
        with (self._folder / "stderr.log").open("wb") as stderr:
            self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = self._log_tail()
                self.stop()
                raise RuntimeError(f"pgbouncer exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        log = self._log_tail()
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port} within 15 s\n{log}")

    def _log_tail(self) -> str:
        if self._folder is None:
            return ""
        lines: list[str] = []
        for name in ("stderr.log", "pgbouncer.log"):
            log = self._folder / name
            if log.exists():
                lines.extend(log.read_text(errors="replace").splitlines()[-20:])
        return "\n".join(lines)

    def stop(self) -> None:
        """Stop PgBouncer (closing its client connections) and delete its folder."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def socket_dir_of(server_url: str) -> Path:
    """Return the unix socket folder of a ``postgresql://...?host=/dir`` URL (the embedded server's form)."""
    from psycopg.conninfo import conninfo_to_dict

    host = str(conninfo_to_dict(server_url).get("host") or "")
    if not host.startswith("/"):
        raise ValueError("the server URL does not name a unix socket folder")
    return Path(host)


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    # Turn a CI timeout's SIGTERM into an exception, once, so the servers below are still stopped.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def run_suite(pytest_args: list[str]) -> int:
    """Run pytest through PgBouncer in front of a fresh embedded server and return pytest's exit code."""
    import pgserver
    import psycopg
    from helpers import without_fsync

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    folder = Path(tempfile.mkdtemp(prefix="sony-rag-pooler-pass-"))
    server = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        server_url = str(server.get_uri())
        without_fsync(server_url)  # a throwaway server, as conftest's own
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
        with PgBouncer(socket_dir_of(server_url)) as bouncer:
            env = {**os.environ, "TEST_DATABASE_URL": bouncer.url(TEST_DATABASE),
                   "SONY_RAG_TRANSACTION_POOLER": "true"}
            print(f"pooler pass: PgBouncer (transaction mode) on 127.0.0.1:{bouncer.port} "
                  f"in front of the embedded server in {folder}", flush=True)
            command = [sys.executable, "-m", "pytest", *pytest_args]
            if not any(Path(arg.split("::")[0]).exists() for arg in pytest_args if not arg.startswith("-")):
                command.append("tests")  # the whole suite unless paths were given
            return subprocess.call(command, env=env)
    finally:
        server.cleanup()  # stops the server and deletes its data folder
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_suite(sys.argv[1:] or ["-q"]))
