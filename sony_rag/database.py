"""``Database``: one object owning a sync and an async connection pool to one Postgres server.

It resolves where to connect (``DATABASE_URL`` or the embedded server), waits for a server that is waking
up (bounded retries with backoff), applies the transaction-pooler rules (no prepared statements, no
session ``SET``), registers pgvector's type on each new connection, and runs plans (``run``/``arun``),
translating database errors into sony-rag's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types import TypeInfo
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolClosed, PoolTimeout

from sony_rag.connection_pools import RecentFirstAsyncConnectionPool, RecentFirstConnectionPool
from sony_rag.conninfo import describe_conninfo, normalize_url
from sony_rag.embedded import embedded_url
from sony_rag.errors import (
    DatabaseUnavailableError,
    SonyRagError,
    translate_database_error,
)
from sony_rag.executor import NotStarted, Plan, adrive, drive
from sony_rag.json_values import loads_exact
from sony_rag.retry import ConnectionGate, backoff_delays, give_up_at_once
from sony_rag.settings import Settings, get_settings
from sony_rag.vector_index import Capabilities, VectorIndex, warn_once

if TYPE_CHECKING:
    from sony_rag.message_cache import MessageCache
    from sony_rag.replicas import ReplicaSet

logger = logging.getLogger("sony_rag")
T = TypeVar("T")

# How long cached server facts (pgvector version, index options) are trusted before being read again.
_CAPABILITY_TTL_SECONDS = 60.0

# A connection back in the pool for less than this is handed out again without the pool's liveness check (an
# empty query: a round trip on every call). Connections die unnoticed when a server restarts or fails over, or
# when a Neon compute sleeps after 5 minutes idle: within a second of their last use that is rare, and a plan
# that meets one anyway loses nothing (reads are retried once; a write whose BEGIN fails never started, and is
# retried too), after the pool has replaced every dead idle connection.
_TRUSTED_IDLE_SECONDS = 1.0




def is_transaction_pooler(conninfo: str, explicit: bool | None) -> bool:
    """Return True when the URL points at a transaction-mode pooler (Neon's '-pooler' hosts) or settings say so."""
    if explicit is not None:
        return explicit
    try:
        host = str(conninfo_to_dict(conninfo).get("host") or "")
    except psycopg.ProgrammingError:
        return False
    return any("-pooler" in name for name in host.split(","))


class Database:
    """Both pools to one server, opened lazily; use as a (sync or async) context manager or call ``close``."""

    def __init__(self, url: str | None = None, *, settings: Settings | None = None,
                 read_urls: Sequence[str] | None = None) -> None:
        """Prepare (but do not open) pools for ``url``, else the settings' URL, else the embedded server.

        ``read_urls`` (else the settings' ``read_urls``): read replicas for retrieval (see sony_rag.replicas).
        Raises ConfigurationError for a malformed URL or settings (see ``sony_rag.conninfo.normalize_url``).
        """
        self.settings = settings or get_settings()
        # Checked here, before anything connects: a malformed URL is a ConfigurationError that never quotes it.
        if url is not None:
            url = normalize_url(url)
        elif self.settings.database_url is not None:
            url = normalize_url(self.settings.database_url.get_secret_value(), source="DATABASE_URL")
        self._url = url
        if read_urls is None:
            read_urls = [each.get_secret_value() for each in self.settings.read_urls]
        self.replicas: ReplicaSet | None = None
        if read_urls:
            from sony_rag.replicas import ReplicaSet

            self.replicas = ReplicaSet(read_urls, self.settings, Database)
        self._conninfo: str | None = None
        self._lock = threading.Lock()
        self._decoded_messages: MessageCache | None = None
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._apool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._apool_loop: asyncio.AbstractEventLoop | None = None
        self._apool_opening = asyncio.Lock()
        self._vector_info: TypeInfo | None = None
        self._capabilities: tuple[float, Capabilities] | None = None
        self._pooler_cache: tuple[str, bool | None, bool] | None = None
        self._closed = False
        # Callers share one connection attempt while the server is unreachable (see sony_rag.retry); the
        # cool-down is the first backoff step, so a recovered server is used again within one step.
        self._gate = ConnectionGate(self._probe, self._drop_pools, cool_down=self.settings.connect_backoff)
        # When each pooled connection was last given back (see _TRUSTED_IDLE_SECONDS).
        self._returned_at: weakref.WeakKeyDictionary[psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
                                                     float] = weakref.WeakKeyDictionary()

    # -- where and how to connect -------------------------------------------------------------------

    @property
    def conninfo(self) -> str:
        """Return the libpq connection string (contains secrets: never log it); starts the embedded server."""
        if self._conninfo is None:
            self._conninfo = self._url if self._url is not None else embedded_url(self.settings.data_dir)
        return self._conninfo

    @property
    def description(self) -> str:
        """Return where this database is, safe to print (no password)."""
        return describe_conninfo(self.conninfo)

    @property
    def transaction_pooler(self) -> bool:
        """Return True when connections go through a transaction-mode pooler."""
        # Asked on every plan run: parsing the URL each time cost tens of microseconds per call.
        conninfo, explicit = self.conninfo, self.settings.transaction_pooler
        cached = self._pooler_cache
        if cached is None or cached[0] != conninfo or cached[1] != explicit:
            cached = (conninfo, explicit, is_transaction_pooler(conninfo, explicit))
            self._pooler_cache = cached
        return cached[2]

    @property
    def decoded_messages(self) -> MessageCache:
        """Return the messages decoded from this database's chat rows that every SonyChatMessageHistory shares."""
        cache = self._decoded_messages
        if cache is None:
            # Imported here: the cache holds LangChain messages, which the documented operations never load.
            from sony_rag.message_cache import MessageCache

            with self._lock:
                cache = self._decoded_messages = self._decoded_messages or MessageCache()
        return cache

    def connection_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments every connection of this database is opened with."""
        # Keyword arguments override the URL's own parameters, so what the URL sets (an application_name, startup
        # options such as Neon's endpoint=...) is kept, and ours is added to it, not put in its place.
        given = conninfo_to_dict(self.conninfo)
        kwargs: dict[str, Any] = {
            "autocommit": True,  # every plan opens its own explicit transaction
            "connect_timeout": max(1, round(self.settings.connect_timeout)),
        }
        if not given.get("application_name"):
            kwargs["application_name"] = "sony-rag"
        if self.transaction_pooler:
            # PgBouncer in transaction mode hands each transaction to any server connection: a statement
            # prepared on one is missing on the next ("prepared statement _pg3_0 does not exist").
            kwargs["prepare_threshold"] = None
        elif self.settings.statement_timeout_ms:
            # A startup parameter costs no round trip; behind a pooler the executor uses SET LOCAL instead.
            timeout = f"-c statement_timeout={self.settings.statement_timeout_ms}"
            kwargs["options"] = f"{given['options']} {timeout}" if given.get("options") else timeout
        return kwargs

    def _per_transaction_settings(self) -> dict[str, str] | None:
        if self.transaction_pooler and self.settings.statement_timeout_ms:
            return {"statement_timeout": str(self.settings.statement_timeout_ms)}
        return None

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        """Return a new plain connection (no pgvector types), retrying while the server wakes up.

        Raises DatabaseUnavailableError after the last retry, or at once when waiting cannot help (nothing
        listens on this machine's port or socket, a refused login, a missing database: ``sony_rag.retry``).
        """
        kwargs = {**self.connection_kwargs(), "autocommit": autocommit}
        delays = backoff_delays(self.settings.connect_backoff, self.settings.connect_retries)
        attempts = 0
        while True:
            attempts += 1
            try:
                return psycopg.connect(self.conninfo, **kwargs)
            except psycopg.OperationalError as error:
                if give_up_at_once(error, self.conninfo):
                    raise DatabaseUnavailableError(
                        f"could not connect to {self.description}: {_safe_reason(error, self.conninfo)}"
                    ) from None
                delay = next(delays, None)
                if delay is None:
                    raise DatabaseUnavailableError(
                        f"could not connect to {self.description} after {attempts} attempts: "
                        f"{_safe_reason(error, self.conninfo)}"
                    ) from None
                logger.warning("sony-rag: %s not reachable (attempt %d/%d), retrying in %.2fs",
                               self.description, attempts, self.settings.connect_retries + 1, delay)
                time.sleep(delay)

    def _probe(self) -> None:
        # The connection attempt that callers share (ConnectionGate): a full retry cycle, then closed.
        self.connect().close()

    def _drop_pools(self) -> None:
        # After a failed attempt: callers queued for a pooled connection fail now (PoolClosed) instead of
        # waiting out pool_timeout, and the first call after recovery opens fresh pools. Closing may wait for
        # the pools' workers, so it happens in the background.
        with self._lock:
            pool, self._pool = self._pool, None
            apool, self._apool = self._apool, None
            loop = self._apool_loop
        # timeout=0: the pools fail their waiting callers at once instead of after their workers stopped (a
        # worker may be in a connection attempt of its own, seconds long).
        if pool is not None:
            threading.Thread(target=pool.close, kwargs={"timeout": 0}, name="sony-rag-pool-close",
                             daemon=True).start()
        if apool is not None:
            _close_async_pool_from_sync(apool, loop, timeout=0)

    # -- pools ----------------------------------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        _register_json_loads(conn)
        info = self._vector_info or self._fetch_vector_info(conn)
        if info is not None:
            _register_vector_adapters(conn, info)

    async def _aconfigure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        _register_json_loads(conn)
        info = self._vector_info
        if info is None:
            info = await TypeInfo.fetch(conn, "vector")
            self._vector_info = info
        if info is not None:
            _register_vector_adapters(conn, info)

    def _fetch_vector_info(self, conn: psycopg.Connection[Any]) -> TypeInfo | None:
        # Fetched once per database rather than on every new connection; None until migrations ran.
        info = TypeInfo.fetch(conn, "vector")
        self._vector_info = info
        return info

    def _recently_used(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
        returned = self._returned_at.get(conn)
        return returned is not None and time.monotonic() - returned < _TRUSTED_IDLE_SECONDS

    # A dead idle connection usually means the server restarted (or a Neon compute slept) and every idle
    # connection died with it. psycopg_pool would find them one per request, pausing 1 s, 2 s, 4 s... in
    # between, so a full pool outlasts pool_timeout: on the first dead one, replace all idle ones at once.

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        if self._recently_used(conn):
            return
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            self._connection_lost()
            pool = self._pool
            if pool is not None:
                pool.check()
            raise

    async def _acheck(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._recently_used(conn):
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            self._connection_lost()
            pool = self._apool
            if pool is not None and self._apool_loop is asyncio.get_running_loop():
                await pool.check()
            raise

    def _connection_lost(self) -> None:
        # The server may be gone (a restart, a compute that slept): the next caller checks before using the pool,
        # and a check starts now, so callers queued inside the pool learn the outcome too.
        self._returned_at.clear()
        self._gate.doubt()
        self._gate.nudge()

    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        """Return the sync pool, opening it (after the server answers) on first use.

        Raises DatabaseUnavailableError when the server cannot be reached (see ``sony_rag.retry``).
        """
        if self._closed:
            raise DatabaseUnavailableError("this Database was closed")
        pool = self._pool
        if pool is not None and self._gate.is_open:
            return pool
        if pool is None:
            # A new pool waits for the server with the gate's clear error, never for its own pool_timeout.
            self._gate.doubt()
        self._gate.pass_through()  # one attempt shared by every caller
        with self._lock:
            if self._closed:
                raise DatabaseUnavailableError("this Database was closed")
            if self._pool is None:
                self._pool = RecentFirstConnectionPool(
                    self.conninfo, kwargs=self.connection_kwargs(), min_size=self.settings.pool_min_size,
                    max_size=self.settings.pool_max_size, timeout=self.settings.pool_timeout,
                    configure=self._configure, check=self._check,
                    name="sony-rag", open=True,
                )
            return self._pool

    async def apool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        """Return the async pool of the running event loop, opening it on first use."""
        if self._closed:
            raise DatabaseUnavailableError("this Database was closed")
        loop = asyncio.get_running_loop()
        if self._apool is None or self._apool_loop is not loop:
            # A new pool waits for the server with the gate's clear error, never for its own pool_timeout.
            self._gate.doubt()
        await self._gate.apass_through()  # one attempt shared by every caller (threads included)
        with self._lock:
            if self._closed:
                raise DatabaseUnavailableError("this Database was closed")
            stale, stale_loop = None, self._apool_loop
            if self._apool is not None and self._apool_loop is not loop:
                # A pool belongs to the loop that opened it; asyncio.run() twice means two loops.
                stale, self._apool = self._apool, None
            if self._apool is None:
                self._apool = RecentFirstAsyncConnectionPool(
                    self.conninfo, kwargs=self.connection_kwargs(), min_size=self.settings.pool_min_size,
                    max_size=self.settings.pool_max_size, timeout=self.settings.pool_timeout,
                    configure=self._aconfigure, check=self._acheck,
                    name="sony-rag-async", open=False,
                )
                self._apool_loop = loop
                self._apool_opening = asyncio.Lock()
            pool, opening = self._apool, self._apool_opening
        if stale is not None:
            _close_async_pool_from_sync(stale, stale_loop)
        if pool.closed:
            # Many tasks may make their first call at once: one opens the pool, the others wait for it.
            async with opening:
                if pool.closed:
                    # Waiting for min_size connections leaves no connect task in flight: a loop that ends
                    # while one is pending hangs in asyncio.run()'s shutdown, as the pool keeps retrying it.
                    await pool.open(wait=True, timeout=self.settings.pool_timeout)
        return pool

    def reset(self) -> None:
        """Close both pools and forget cached server facts (after migrations or an index rebuild)."""
        with self._lock:
            pool, self._pool = self._pool, None
            apool, self._apool = self._apool, None
            self._vector_info = None
            self._capabilities = None
        if self.replicas is not None:
            self.replicas.reset()
        if pool is not None:
            pool.close()
        if apool is not None:
            _close_async_pool_from_sync(apool, self._apool_loop)

    def close(self) -> None:
        """Close both pools; the Database cannot be used afterwards."""
        # Closed first: a call still running elsewhere must not open a new pool while these close.
        self._closed = True
        self.reset()

    async def aclose(self) -> None:
        """Close both pools from async code; the Database cannot be used afterwards."""
        with self._lock:
            self._closed = True
            apool, self._apool = self._apool, None
            loop = self._apool_loop
        if self.replicas is not None:
            await self.replicas.aclose()
        if apool is not None:
            if loop is asyncio.get_running_loop():
                await apool.close()
            else:
                # Opened by an earlier asyncio.run(): awaiting it here fails with "Event loop is closed".
                _close_async_pool_from_sync(apool, loop)
        self.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- running plans -----------------------------------------------------------------------------

    def run(self, plan_: Plan[T]) -> T:
        """Run a plan (a write in one transaction) and return its result; raises SonyRagError subclasses.

        ValueError for a plan made with ``transactional=False``: those run on a connection of their own.
        With read replicas, a plan that may read from one does (see sony_rag.replicas).
        """
        if self.replicas is not None and not self._closed:
            return self.replicas.run(plan_, self._run_on_primary)
        return self._run_on_primary(plan_)

    def _run_on_primary(self, plan_: Plan[T]) -> T:
        initial = self._initial_settings(plan_)
        for attempt in range(2):
            try:
                pool = self.pool()
                # getconn/putconn rather than pool.connection(): its context manager and the commit it ends with
                # (nothing to commit: connections are in autocommit and plans end their own transactions) cost
                # a tenth of a chat append's client work. putconn rolls back a connection left in a transaction.
                conn = pool.getconn()
                try:
                    return drive(conn, plan_, initial, pooled=self.transaction_pooler)
                except Exception as error:
                    self._failed_on(conn, error)
                    raise
                finally:
                    self._returned(conn)
                    pool.putconn(conn)
            except (PoolTimeout, psycopg.Error) as error:
                self._raise_unless_retryable(plan_, error, attempt)
            with contextlib.suppress(PoolClosed):
                pool.check()  # replaces every dead idle connection, so the retry gets a live one
        raise AssertionError("unreachable")

    async def arun(self, plan_: Plan[T]) -> T:
        """Run a plan (a write in one transaction) on the async pool and return its result (errors as ``run``)."""
        if self.replicas is not None and not self._closed:
            return await self.replicas.arun(plan_, self._arun_on_primary)
        return await self._arun_on_primary(plan_)

    async def _arun_on_primary(self, plan_: Plan[T]) -> T:
        initial = self._initial_settings(plan_)
        for attempt in range(2):
            try:
                pool = await self.apool()
                aconn = await pool.getconn()
                try:
                    return await adrive(aconn, plan_, initial, pooled=self.transaction_pooler)
                except Exception as error:
                    self._failed_on(aconn, error)
                    raise
                finally:
                    self._returned(aconn)
                    await pool.putconn(aconn)
            except (PoolTimeout, psycopg.Error) as error:
                self._raise_unless_retryable(plan_, error, attempt)
            with contextlib.suppress(PoolClosed):
                await pool.check()
        raise AssertionError("unreachable")

    def _initial_settings(self, plan_: Plan[Any]) -> dict[str, str] | None:
        if not plan_.transactional:
            # Its SetLocal steps are session settings: on a pooled connection they would outlive the plan.
            raise ValueError("a plan made with transactional=False runs on a connection of its own (executor.drive)")
        return self._per_transaction_settings()

    def _failed_on(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], error: Exception) -> None:
        """Note a plan's failure on ``conn``; raises OperationalError when the connection was lost midway."""
        if conn.closed:
            # The server may have restarted: until checked again, no idle connection is trusted.
            self._connection_lost()
            if _lost_midway(conn, error):
                raise psycopg.OperationalError(f"the connection was lost: {error!r}") from error

    def _returned(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
        if not conn.closed:
            self._returned_at[conn] = time.monotonic()

    def _raise_unless_retryable(self, plan_: Plan[Any], error: PoolTimeout | psycopg.Error, attempt: int) -> None:
        """Return when ``plan_`` may run once more after ``error``; else raise the SonyRagError it stands for."""
        if isinstance(error, PoolTimeout):
            raise DatabaseUnavailableError(
                f"no connection to {self.description} became free within {self.settings.pool_timeout}s"
            ) from error
        if isinstance(error, PoolClosed):
            # Closed under the caller: by a failed connection attempt (its callers all fail with its error),
            # by close(), or by reset() (after migrations: the next pool serves the retry).
            failure = self._gate.failure
            if failure is not None:
                raise DatabaseUnavailableError(failure) from None
            if self._closed or attempt > 0:
                raise DatabaseUnavailableError("this Database was closed") from error
            return
        # A read is retried once on a lost connection, and so is an idempotent write (running it again is
        # harmless); any other write only when it never began (its BEGIN met a dead connection): lost later, it
        # may have committed (a COMMIT in flight) or used up one-shot input (COPY rows).
        if attempt == 0 and (isinstance(error, NotStarted)
                             or ((plan_.read_only or plan_.idempotent) and _connection_lost(error))):
            logger.warning("sony-rag: connection to %s lost %s; retrying once", self.description,
                           "during a read" if plan_.read_only else "before a write began"
                           if isinstance(error, NotStarted) else "during an idempotent write")
            return
        raise translate_database_error(error) from error

    # -- server facts ------------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """Return the server's pgvector version and vector index options (cached for a minute)."""
        cached = self._capabilities
        if cached is not None and time.monotonic() - cached[0] < _CAPABILITY_TTL_SECONDS:
            return cached[1]
        from sony_rag import plans

        caps = self.run(plans.read_capabilities())
        self._capabilities = (time.monotonic(), caps)
        warn_once(caps)
        return caps

    async def acapabilities(self) -> Capabilities:
        """Return the server's pgvector version and vector index options (cached for a minute)."""
        cached = self._capabilities
        if cached is not None and time.monotonic() - cached[0] < _CAPABILITY_TTL_SECONDS:
            return cached[1]
        from sony_rag import plans

        caps = await self.arun(plans.read_capabilities())
        self._capabilities = (time.monotonic(), caps)
        warn_once(caps)
        return caps

    def forget_capabilities(self) -> None:
        """Drop cached server facts so the next search reads them again (after an index change)."""
        self._capabilities = None

    def __repr__(self) -> str:
        where = self.description if self._conninfo or self._url else "embedded (not started)"
        return f"Database({where})"


def _register_vector_adapters(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
                              info: TypeInfo) -> None:
    from pgvector.psycopg.vector import register_vector_info

    register_vector_info(conn, info)


def _register_json_loads(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    # json and jsonb columns (document metadata, session metadata, checkpoints) are read with orjson, the same
    # values json.loads gives: stdlib json was a tenth of a search's client time (ten metadata dicts per search).
    set_json_loads(loads_exact, conn)


def _lost_midway(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], error: Exception) -> bool:
    # A connection cut mid-call (a restart, PgBouncer dropping its server side) does not always surface as
    # OperationalError: psycopg has raised InternalError ("received 2 results from command 'BEGIN'") and,
    # during COPY, a plain ValueError. The closed connection tells what really happened.
    return conn.closed and not isinstance(error, psycopg.OperationalError | SonyRagError)


def _connection_lost(error: psycopg.Error) -> bool:
    # A pool closed under a call is no lost connection: nothing to retry on.
    return isinstance(error, psycopg.OperationalError) and not isinstance(
        error, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable | PoolClosed
    )


def _safe_reason(error: BaseException | None, conninfo: str) -> str:
    if error is None:
        return "unknown error"
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    password = conninfo_to_dict(conninfo).get("password")
    if password:
        reason = reason.replace(str(password), "***")
    return reason


def _close_async_pool_from_sync(pool: AsyncConnectionPool[Any], loop: asyncio.AbstractEventLoop | None,
                                timeout: float = 5.0) -> None:
    # An async pool can only be closed on its own loop; once that loop is closed its tasks are gone and
    # the connections are released when the pool is garbage-collected.
    if loop is not None and loop.is_running():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(pool.close(timeout))
        else:
            asyncio.run_coroutine_threadsafe(pool.close(timeout), loop)
        return
    if loop is not None and not loop.is_closed():
        try:
            loop.run_until_complete(pool.close(timeout))
            return
        except Exception:
            logger.debug("sony-rag: could not close the async pool on its loop")


__all__ = ["Capabilities", "Database", "SonyRagError", "VectorIndex", "describe_conninfo", "is_transaction_pooler"]


def __getattr__(name: str) -> Any:
    """Return the documented operation ``name`` from ``sony_rag.operations``; raise AttributeError for others.

    DATABASE.md imports its operations ``from database import ...``, so ``from sony_rag.database import
    create_chat_session`` keeps working: the operations live in ``sony_rag.operations``.
    """
    import sony_rag.operations as operations

    if name in operations.__all__:
        return getattr(operations, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
