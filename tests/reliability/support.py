"""Helpers of the reliability tests: a private server that the fault tests may stop, start and attack.

The fault tests need a server of their own: stopping the shared one would break every other test. Under
``SONY_RAG_TRANSACTION_POOLER=true`` (the pooler pass) the private server is reached through its own
PgBouncer in transaction mode, as a Neon ``-pooler`` endpoint would be; otherwise directly.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import psycopg
from conftest import test_settings  # tests/conftest.py, as the other test folders import it
from pgbouncer import PgBouncer, pgbouncer_available, socket_dir_of  # tests/pgbouncer.py
from psycopg.conninfo import make_conninfo

from sony_rag.connection import Database
from sony_rag.migrate import migrate

FAULT_DATABASE = "sony_rag_faults"


def pooler_pass() -> bool:
    """Return True in the pooler pass (the suite run through PgBouncer by scripts/test-through-pgbouncer.sh)."""
    return os.environ.get("SONY_RAG_TRANSACTION_POOLER", "").strip().lower() in {"1", "true", "yes", "on"}


class FaultServer:
    """An embedded PostgreSQL owned by one test module: stop, start and terminate its backends at will."""

    def __init__(self, folder: Path) -> None:
        """Start a fresh server in ``folder`` with a migrated FAULT_DATABASE (and PgBouncer in the pooler pass)."""
        import pgserver

        self._server = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
        self.admin_url = str(self._server.get_uri())
        self.socket_dir = socket_dir_of(self.admin_url)
        self.direct_url = make_conninfo(self.admin_url, dbname=FAULT_DATABASE)
        self._lock = threading.Lock()
        self.bouncer: PgBouncer | None = None
        try:
            self._prepare()
        except BaseException:
            self.close()  # never leave a server running behind a failed setup
            raise

    def _prepare(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{FAULT_DATABASE}"')
        if pooler_pass():
            if not pgbouncer_available():
                raise RuntimeError("the pooler pass needs pgbouncer installed")
            # Short waits so that a client queued while the server is down fails instead of hanging for
            # PgBouncer's defaults (120 s query_wait_timeout, 15 s between server login retries).
            self.bouncer = PgBouncer(self.socket_dir, pool_size=20, settings={
                "query_wait_timeout": "5", "server_login_retry": "0", "server_connect_timeout": "3",
            }).start()
        with Database(self.direct_url, settings=test_settings(transaction_pooler=False)) as db:
            migrate(db)

    @property
    def url(self) -> str:
        """Return the URL clients use: through PgBouncer in the pooler pass, else direct."""
        if self.bouncer is not None:
            return self.bouncer.url(FAULT_DATABASE)
        return self.direct_url

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self._server.pgdata, user=self._server.system_user, timeout=60)

    @property
    def running(self) -> bool:
        """Return True while the postmaster answers on its socket."""
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Stop the server at once, as a failover or a scaled-to-zero compute does (open sessions are cut)."""
        with self._lock:
            self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        """Start the server again on the same socket folder, waiting until it accepts connections."""
        with self._lock:
            self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self._server.log), "start")

    def restart(self, down_for: float = 0.3) -> None:
        """Stop the server, leave it down for ``down_for`` seconds, then start it again."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def terminate_backends(self, application_name: str = "sony-rag") -> int:
        """Terminate every backend of FAULT_DATABASE opened by ``application_name``; return how many."""
        with psycopg.connect(self.direct_url, autocommit=True, application_name="reliability-admin") as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() AND application_name = %s",
                (FAULT_DATABASE, application_name)).fetchone()
        return int(row[0]) if row else 0

    def terminate_when_running(self, tag: str, *, times: int = 1, within: float = 20.0) -> int:
        """Terminate the backend running a statement that contains ``tag``, ``times`` times; return how many.

        Each time waits (at most ``within`` seconds in all) for a backend to be busy with the tagged
        statement, so the connection is lost in the middle of it.
        """
        done = 0
        deadline = time.monotonic() + within
        with psycopg.connect(self.direct_url, autocommit=True, application_name="reliability-admin") as conn:
            while done < times and time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                    "AND pid <> pg_backend_pid() AND query LIKE %s LIMIT 1",
                    (FAULT_DATABASE, f"%{tag}%")).fetchone()
                if row is None:
                    time.sleep(0.01)
                    continue
                killed = conn.execute("SELECT pg_terminate_backend(%s)", (row[0],)).fetchone()
                if killed and killed[0]:
                    done += 1
                    # Wait for that backend to be gone, so the next round finds the retry, not the victim.
                    while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (row[0],)).fetchone():
                        time.sleep(0.01)
        return done

    def active_statements(self, tag: str) -> int:
        """Return how many backends are running a statement containing ``tag``."""
        with psycopg.connect(self.direct_url, autocommit=True, application_name="reliability-admin") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                "AND pid <> pg_backend_pid() AND query LIKE %s", (FAULT_DATABASE, f"%{tag}%")).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Stop PgBouncer and the server and delete the data folder; safe to call twice."""
        if self.bouncer is not None:
            self.bouncer.stop()
            self.bouncer = None
        with self._lock:
            if (self._server.pgdata / "postmaster.pid").exists():
                # pgserver's own cleanup only stops the postmaster it started: after a restart that is gone.
                with contextlib.suppress(Exception):
                    self._pg_ctl("-w", "-m", "immediate", "stop")
            self._server.cleanup()
