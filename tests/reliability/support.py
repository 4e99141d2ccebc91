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

import psutil
import psycopg
from helpers import test_settings
from pgbouncer import PgBouncer, pgbouncer_available, socket_dir_of  # tests/pgbouncer.py
from psycopg.conninfo import make_conninfo

from sony_rag.database import Database
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
            # pgserver's cleanup signals the postmaster it started; one that has just exited (stopped above,
            # or by the test) makes psutil raise NoSuchProcess, with nothing left to stop.
            with contextlib.suppress(psutil.NoSuchProcess):
                self._server.cleanup()


class OutageProxy:
    """A loopback TCP port in front of the fault server's unix socket that can play an outage.

    Up, it forwards each connection to the server. Down, it cuts every forwarded connection and accepts new
    ones without ever answering: what a client sees while a Neon compute is unreachable or waking (the
    attempt ends only by its connect timeout). Back up, it drops the silent ones (their clients retry) and
    forwards again.
    """

    def __init__(self, socket_path: str) -> None:
        """Listen on a free loopback port, forwarding to ``socket_path``; call ``close`` when done."""
        import socket

        self._socket_path = socket_path
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._up = True
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="outage-proxy")
        self._thread.start()

    def url(self, dbname: str) -> str:
        """Return a URL (no TLS, no password) that reaches ``dbname`` through the proxy."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}?sslmode=disable&gssencmode=disable"

    def down(self) -> None:
        """Start the outage: cut every open connection; new ones hang unanswered."""
        with self._lock:
            self._up = False
            self._cut_all()

    def up(self) -> None:
        """End the outage: drop the unanswered connections and forward new ones again."""
        with self._lock:
            self._up = True
            self._cut_all()

    def _cut_all(self) -> None:
        import socket

        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._open.clear()

    def _serve(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._open.append(client)
                if not self._up:
                    continue  # held open and never answered
                server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    server.connect(self._socket_path)
                except OSError:
                    client.close()
                    continue
                self._open.append(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: object, target: object) -> None:
        import socket

        assert isinstance(source, socket.socket) and isinstance(target, socket.socket)
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and cut every connection."""
        self._stop.set()
        self._thread.join()
        self._listener.close()
        with self._lock:
            self._cut_all()
