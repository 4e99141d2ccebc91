"""A primary and a streaming standby of our own, made with the embedded server's binaries, for the replica tests.

``pgserver`` ships ``initdb``, ``pg_ctl``, ``pg_basebackup`` and ``postgres``: the session-scoped ``cluster``
fixture starts a primary (``wal_level=replica``, a replication line in pg_hba, TCP on 127.0.0.1 on a free
port), migrates a database on it, clones it with ``pg_basebackup -R`` and starts the clone as a hot standby.
As root, PostgreSQL runs as the user ``pgserver`` (as pgserver itself does: postgres refuses to run as root).
The figures the tests measure are printed in the terminal summary (no ``-s`` needed).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import test_settings

from sony_rag.database import Database
from sony_rag.migrate import migrate

DATABASE = "sony_rag_replicas"
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the replica tests measured."""
    if FIGURES:
        terminalreporter.section("read replica figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """A primary and one streaming standby on 127.0.0.1; the standby can be stopped, started and delayed."""

    def __init__(self, root: Path) -> None:
        """Create and start both servers under ``root`` with a migrated DATABASE."""
        import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            self.user = "pgserver"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(root)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, 0o555)
            ensure_folder_permissions(self.bin.parent / "lib", 0o444)
            entry = pwd.getpwnam(self.user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        self.primary_dir, self.standby_dir = root / "primary", root / "standby"
        self.primary_port, self.standby_port = _free_port(), _free_port()
        self._initdb()
        self._pg_ctl(self.primary_dir, "start")
        with psycopg.connect(self.url(self.primary_port, "postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        with Database(self.primary_url, settings=test_settings()) as db:
            migrate(db)
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                  "-D", str(self.standby_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with open(self.standby_dir / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.standby_port}\n")
        self.start_standby()

    def url(self, port: int, dbname: str = DATABASE) -> str:
        """Return the URL of the server on ``port``."""
        return f"postgresql://postgres@127.0.0.1:{port}/{dbname}?sslmode=disable"

    @property
    def primary_url(self) -> str:
        """Return the primary's URL."""
        return self.url(self.primary_port)

    @property
    def standby_url(self) -> str:
        """Return the standby's URL."""
        return self.url(self.standby_port)

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([str(self.bin / program), *args], user=self.user, capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed: {done.stderr.strip()}")

    def _pg_ctl(self, folder: Path, *args: str) -> None:
        self._run("pg_ctl", "-D", str(folder), "-l", str(folder / "log"), "-w", "-t", "60", *args)

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.primary_dir), "--auth=trust", "-U", "postgres", "--encoding=utf8",
                  "--no-sync")
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.primary_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                       "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nmax_connections = 80\n"
                       "fsync = off\nshared_preload_libraries = ''\n")
        with open(self.primary_dir / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust\n")

    def start_standby(self) -> None:
        """Start the standby and wait until it answers as a hot standby."""
        self._pg_ctl(self.standby_dir, "start")
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.standby_url, connect_timeout=2) as conn:
                    if conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
                        return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def kill_standby(self) -> None:
        """Stop the standby at once, as a crash would (``pg_ctl stop -m immediate``)."""
        self._pg_ctl(self.standby_dir, "stop", "-m", "immediate")

    def set_apply_delay(self, milliseconds: int) -> None:
        """Make the standby wait ``milliseconds`` before applying each commit (``recovery_min_apply_delay``)."""
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(milliseconds)}ms'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 10
            query = "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'"
            while conn.execute(query).fetchone() != (str(int(milliseconds)),):
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not take the new apply delay")
                time.sleep(0.02)

    def wait_for_standby(self) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary_url, autocommit=True) as primary:
            target = primary.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
        deadline = time.monotonic() + 30
        with psycopg.connect(self.standby_url, autocommit=True) as standby:
            while not standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", target).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not catch up")
                time.sleep(0.02)

    def close(self) -> None:
        """Stop both servers (the standby may be down already)."""
        for folder in (self.standby_dir, self.primary_dir):
            if (folder / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError):
                    self._pg_ctl(folder, "stop", "-m", "immediate")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Return a running primary and streaming standby, stopped and deleted after the run."""
    root = tmp_path_factory.mktemp("replicas")
    made = None
    try:
        made = Cluster(root)
        yield made
    finally:
        if made is not None:
            made.close()
        shutil.rmtree(root, ignore_errors=True)
