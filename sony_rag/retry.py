"""When to wait for the database and when to fail at once: the retry and error policy of connecting.

Two parts, both without knowledge of pools:

* ``give_up_at_once`` classifies a failed connection attempt. A waking Neon compute or a pooler waiting for
  one shows up as a timeout, a connection closed during the handshake, or one of their wake-up errors: those
  are retried with backoff (``backoff_delays``). A refused connection on this machine (TCP to localhost, a
  unix socket that refuses or does not exist) means no server runs here, and a refused login or a missing
  database will not heal by waiting: those fail at once.
* ``ConnectionGate`` makes callers share one connection attempt. While the database is unreachable, every
  caller waits for the one attempt (a full retry cycle) in flight and fails with it; calls in the short
  cool-down after a failure fail at once with the same error; the first call after the cool-down starts a
  new attempt, so service resumes without a restart when the server is back. Threads and event loops share
  the attempt alike: it runs on a thread of its own, and each caller waits for its outcome in its own way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import psycopg
from psycopg.conninfo import conninfo_to_dict

from sony_rag.errors import DatabaseUnavailableError

logger = logging.getLogger("sony_rag")

# The largest pause between two connection attempts, however many retries are configured.
MAX_BACKOFF_SECONDS = 5.0

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})
# What libpq says when nothing listens on a local port or socket path (errno texts, lower case).
_NOTHING_LISTENS = ("connection refused", "no such file or directory")
# Refusals that no amount of waiting changes: wrong credentials, a database or role that does not exist,
# a client that cannot reach Neon's endpoint routing, a startup parameter the server refuses.
_PERMANENT = ("password authentication failed", "no pg_hba.conf entry", "does not exist",
              "endpoint id is not specified", "unsupported startup parameter", "invalid sslmode",
              "server does not support ssl")
_PERMANENT_SQLSTATES = frozenset({"28000", "28P01", "3D000"})


def is_local(conninfo: str) -> bool:
    """Return True when every host of ``conninfo`` is this machine (a unix socket, localhost, a loopback address)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return False
    hosts = [host.strip() for host in str(params.get("host") or "").split(",")]
    return all(not host or host.startswith("/") or host.startswith("@") or host.lower() in _LOCAL_HOSTS
               or host.startswith("127.") for host in hosts)


def give_up_at_once(error: psycopg.OperationalError, conninfo: str) -> bool:
    """Return True when retrying the failed connection attempt cannot help (see the module docstring)."""
    if getattr(error, "sqlstate", None) in _PERMANENT_SQLSTATES:
        return True
    message = str(error).lower()
    if any(reason in message for reason in _PERMANENT):
        return True
    if "timeout" in message or "timed out" in message:
        return False
    return is_local(conninfo) and any(reason in message for reason in _NOTHING_LISTENS)


def backoff_delays(first: float, retries: int) -> Iterator[float]:
    """Yield the pause before each of ``retries`` retries: ``first``, doubling, at most MAX_BACKOFF_SECONDS."""
    delay = first
    for _ in range(retries):
        yield delay
        delay = min(delay * 2, MAX_BACKOFF_SECONDS)


def attempt_timeout(connect_timeout: float) -> int:
    """Return the seconds one connection attempt may take: whole seconds, at least 2 (libpq's rule, kept by psycopg)."""
    return max(2, round(connect_timeout))


def retry_cycle_seconds(connect_timeout: float, retries: int, first_backoff: float) -> float:
    """Return the longest a full retry cycle takes: every attempt timing out, every pause taken."""
    return (retries + 1) * attempt_timeout(connect_timeout) + sum(backoff_delays(first_backoff, retries))


class ConnectionGate:
    """One connection attempt at a time for every caller; a failed one is remembered for a short cool-down.

    ``attempt`` connects (retrying as the policy says) and raises DatabaseUnavailableError when it gives up;
    ``on_failure`` runs after a failed attempt, before its waiters are released (the Database drops its pools
    there, so callers queued for a pooled connection fail with the others instead of waiting it out).
    """

    def __init__(self, attempt: Callable[[], None], on_failure: Callable[[], None], cool_down: float) -> None:
        """Create a gate that is not open yet: the first caller starts the first attempt."""
        self._attempt = attempt
        self._on_failure = on_failure
        self.cool_down = cool_down
        self._lock = threading.Lock()
        self._open = False
        self._in_flight: Future[None] | None = None
        self._failure: tuple[float, str] | None = None

    @property
    def is_open(self) -> bool:
        """Return True when the last attempt succeeded and no connection was lost since."""
        return self._open

    @property
    def failure(self) -> str | None:
        """Return the message of the last failed attempt, or None when none failed since the last success."""
        failure = self._failure
        return None if failure is None else failure[1]

    def doubt(self) -> None:
        """Mark the database as possibly unreachable (a connection was lost): the next caller checks first."""
        self._open = False

    def pass_through(self) -> None:
        """Return when the database answers; raises DatabaseUnavailableError (shared by every waiting caller)."""
        if self._open:
            return
        future = self._current_attempt()
        try:
            future.result()
        except DatabaseUnavailableError as error:
            # A fresh exception per caller: one instance raised in many threads would pile up their tracebacks.
            raise DatabaseUnavailableError(str(error)) from None

    async def apass_through(self) -> None:
        """Return when the database answers, waiting without blocking the loop; raises as ``pass_through``."""
        if self._open:
            return
        future = self._current_attempt()
        try:
            # A cancelled waiter cannot cancel the attempt (it is running), so other callers still get its outcome.
            await asyncio.wrap_future(future)
        except DatabaseUnavailableError as error:
            raise DatabaseUnavailableError(str(error)) from None

    def nudge(self) -> None:
        """Start an attempt in the background unless one is in flight or the cool-down runs; never raises."""
        with contextlib.suppress(DatabaseUnavailableError):
            self._current_attempt()

    def _current_attempt(self) -> Future[None]:
        with self._lock:
            if self._open:
                done: Future[None] = Future()
                done.set_result(None)
                return done
            if self._in_flight is not None:
                return self._in_flight
            failure = self._failure
            if failure is not None and time.monotonic() - failure[0] < self.cool_down:
                raise DatabaseUnavailableError(failure[1])
            future: Future[None] = Future()
            future.set_running_or_notify_cancel()
            self._in_flight = future
        # A thread of its own: the attempt outlives any one caller (a cancelled task, a thread that gave up).
        threading.Thread(target=self._run, args=(future,), name="sony-rag-connect", daemon=True).start()
        return future

    def _run(self, future: Future[None]) -> None:
        try:
            self._attempt()
        except DatabaseUnavailableError as error:
            with self._lock:
                self._failure = (time.monotonic(), str(error))  # for callers the pools' closing fails meanwhile
            try:
                self._on_failure()
            except Exception:
                logger.exception("sony-rag: cleaning up after a failed connection attempt failed")
            with self._lock:
                # Again: the cool-down counts from the moment the waiters learn of the failure.
                self._failure = (time.monotonic(), str(error))
                self._in_flight = None
            future.set_exception(error)
        except BaseException as error:
            # Not a verdict on the database (a bug, an interrupt): no cool-down, the next caller tries again.
            with self._lock:
                self._in_flight = None
            future.set_exception(error)
        else:
            with self._lock:
                self._open = True
                self._failure = None
                self._in_flight = None
            future.set_result(None)


__all__ = ["MAX_BACKOFF_SECONDS", "ConnectionGate", "attempt_timeout", "backoff_delays", "give_up_at_once", "is_local",
           "retry_cycle_seconds"]
