"""Plans and the two executors that drive them: the only code that differs between sync and async.

A plan is a generator that yields steps (SQL to run) and receives each step's result; it holds the logic
of an operation once, with no I/O. ``drive`` and ``adrive`` run a plan on one connection:

* A write plan runs inside one transaction, so it is all-or-nothing.
* A write plan made with ``single_statement=True`` sends one statement, which is atomic on its own: it runs
  like a read-only plan's statements (no BEGIN and COMMIT round trips around it).
* A read-only plan (one that promises to write nothing) runs each statement in an implicit transaction of its
  own, together with the plan's settings: under READ COMMITTED every statement of a transaction takes a fresh
  snapshot anyway, so this reads what one explicit transaction would, without the BEGIN and COMMIT round trips.
  Only when not behind a transaction pooler (``pooled``): psycopg ends a pipeline with a Sync and, when results
  are still on their way, a Flush. A Flush that reaches PgBouncer (1.18 here) after the Sync's reply released the
  server gets a server connection of its own, kept linked to the idle client until its next query, while other
  clients wait (``query_wait_timeout``). A pipeline that ends inside a transaction is safe, so behind a pooler
  reads run in an explicit transaction too (BEGIN, then settings and statement in one round trip, then COMMIT).
* A plan made with ``transactional=False`` (index builds: ``CREATE INDEX CONCURRENTLY`` cannot run in a
  transaction) runs statement by statement in autocommit; ``Atomic`` groups statements into one transaction,
  and ``SetLocal`` sets session settings, so such a plan needs a connection of its own.
* ``Together`` sends statements in one round trip and receives each one's rows; ``AfterCommit`` ends a write
  plan's transaction and runs one more statement right after the COMMIT, in the same round trip on a direct
  connection (sony_rag.replicas reads the commit's WAL position that way).

Settings from ``SetLocal`` (and the caller's ``initial`` ones) travel with the next statement in one round trip
(psycopg's pipeline mode: ``set_config(..., true)`` and the statement before one Sync, in one transaction; a
SetLocal step costs no round trip of its own). What to send, and in which order, is decided once, without
I/O, in ``_operations``; the two executors only send it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sony_rag.sql import Query, Statement

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class Fetch:
    """Run a query and receive all its rows as dicts."""

    query: Statement
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Execute:
    """Run a statement and receive its row count."""

    query: Statement
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Copy:
    """Stream rows through binary ``COPY ... FROM STDIN`` and receive the number of rows written."""

    query: Statement
    types: Sequence[str]
    rows: Iterable[Sequence[Any]]


@dataclass(frozen=True)
class SetLocal:
    """Set server settings for the rest of the plan (works behind transaction poolers); receive None.

    In a plan made with ``transactional=False`` they are session settings: they outlive the plan.
    """

    settings: Mapping[str, str]


@dataclass(frozen=True)
class Atomic:
    """Run these statements in one transaction and receive the last one's result (``transactional=False`` plans)."""

    steps: Sequence[Fetch | Execute]


@dataclass(frozen=True)
class Together:
    """Run these queries in one round trip, in order, and receive a list of their rows (one list per query)."""

    steps: Sequence[Fetch]


@dataclass(frozen=True)
class AfterCommit:
    """Commit the plan's transaction, then run ``step`` and receive its rows; the last step of a write plan.

    On a direct connection the COMMIT and ``step`` share one round trip (pipeline mode); behind a transaction
    pooler they go one after the other, since a pipeline that ends outside a transaction can leave PgBouncer
    holding a server connection for this client (see the module docstring).
    """

    step: Fetch


Step = Fetch | Execute | Copy | SetLocal | Atomic | Together | AfterCommit
PlanGenerator = Generator[Step, Any, T]

# Settings a plan may change with SET LOCAL; a fixed set so no name is ever taken from user input.
_LOCAL_SETTINGS = frozenset(
    {"statement_timeout", "ivfflat.probes", "ivfflat.iterative_scan", "ivfflat.max_probes", "hnsw.ef_search",
     "hnsw.iterative_scan", "hnsw.max_scan_tuples", "enable_indexscan", "enable_seqscan", "work_mem",
     "maintenance_work_mem", "lock_timeout", "plan_cache_mode"}
)


class NotStarted(psycopg.OperationalError):
    """Raised by ``drive``/``adrive`` when the connection was found dead before any step of a plan was sent.

    Nothing of the plan ran (its generator was not even started), so running it again is safe, writes included.
    """


@dataclass(frozen=True)
class Plan(Generic[T]):
    """A restartable operation: ``start()`` returns a fresh generator, so a failed read can be retried.

    ``read_only`` promises that the plan writes nothing (its statements then run one by one, see the module
    docstring); ``transactional=False`` makes it run outside a transaction, on a connection of its own.
    ``single_statement`` promises one statement (atomic on its own: no transaction is opened around it);
    ``idempotent`` that running the plan twice has the effect of running it once (so a write whose outcome
    was lost with its connection may be run again). ``replica`` says a read replica may serve it and
    ``session`` names the conversation it reads or writes (sony_rag.replicas routes on both).
    """

    factory: Callable[[], PlanGenerator[T]]
    read_only: bool
    transactional: bool = True
    single_statement: bool = False
    idempotent: bool = False
    replica: bool = False
    session: Any = None

    def start(self) -> PlanGenerator[T]:
        """Return a new generator for this plan."""
        return self.factory()


def plan(*, read_only: bool, transactional: bool = True, single_statement: bool = False, idempotent: bool = False,
         replica: bool = False,
         session: str | None = None) -> Callable[[Callable[P, PlanGenerator[T]]], Callable[P, Plan[T]]]:
    """Return a decorator that turns a generator function into a function returning a ``Plan`` (flags: see Plan).

    ``session``: the name of the parameter holding the conversation's id, which becomes the plan's ``session``.
    """
    if replica and not read_only:
        raise ValueError("only a read-only plan can run on a read replica")

    def decorate(function: Callable[P, PlanGenerator[T]]) -> Callable[P, Plan[T]]:
        # Looked up once here, not on every call: the position of the session parameter.
        index = list(inspect.signature(function).parameters).index(session) if session is not None else -1

        @functools.wraps(function)
        def build(*args: P.args, **kwargs: P.kwargs) -> Plan[T]:
            key = None
            if session is not None:
                key = args[index] if index < len(args) else kwargs.get(session)
            return Plan(functools.partial(function, *args, **kwargs), read_only, transactional, single_statement,
                        idempotent, replica, key)

        return build

    return decorate


def fetch(query: Query) -> Fetch:
    """Return a Fetch step for a ``(query, params)`` pair."""
    return Fetch(*query)


def execute(query: Query) -> Execute:
    """Return an Execute step for a ``(query, params)`` pair."""
    return Execute(*query)


# -- the logic of driving a plan, without I/O ----------------------------------------------------------

# One statement as the executors send it: its text (bytes when rendered once and cached) and parameters.
_Statement = tuple[Statement | bytes, Mapping[str, Any]]
_NO_TRANSACTION = contextlib.nullcontext()  # a `with` target that does nothing, sync or async
# psycopg[binary]'s own libpq has pipeline mode; a system libpq older than 14 has not. There a round's statements
# go one by one, in a transaction of their own unless one is open: the same effect, in more round trips.
_PIPELINE = psycopg.Pipeline.is_supported()


@functools.lru_cache(maxsize=64)
def _set_config_text(count: int, local: bool) -> bytes:
    # The text depends only on how many settings there are: rendered once, not composed on every call.
    calls = [sql.SQL("set_config({}, {}, {})").format(sql.Placeholder(f"n{index}"), sql.Placeholder(f"v{index}"),
                                                      sql.Literal(local))
             for index in range(count)]
    return (sql.SQL("SELECT ") + sql.SQL(", ").join(calls)).as_bytes(None)


def _check_names(settings: Mapping[str, str]) -> None:
    unknown = set(settings) - _LOCAL_SETTINGS
    if unknown:
        raise ValueError(f"setting(s) not allowed in SET LOCAL: {sorted(unknown)}")


def _settings_statement(settings: Mapping[str, str], *, local: bool) -> _Statement:
    _check_names(settings)
    params: dict[str, Any] = {}
    for index, (name, value) in enumerate(sorted(settings.items())):
        params[f"n{index}"] = name
        params[f"v{index}"] = str(value)
    return _set_config_text(len(settings), local), params


@dataclass(frozen=True)
class _Round:
    """Statements sent in one round trip (pipelined when more than one); the result is the last one's."""

    statements: tuple[_Statement, ...]
    rows: bool  # the result is the last statement's rows (else its row count)
    atomic: bool = False  # in a transaction of its own (an Atomic step)
    together: int = 0  # the result is a list of the rows of this many last statements (a Together step)
    after_commit: bool = False  # commit the plan's transaction first (an AfterCommit step)


@dataclass(frozen=True)
class _Done(Generic[T]):
    """The plan returned ``value``: nothing more to send."""

    value: T


def _round_of(setup: Sequence[_Statement], steps: Sequence[Fetch | Execute], *, atomic: bool = False) -> _Round:
    statements = (*setup, *((step.query, step.params) for step in steps))
    return _Round(statements, rows=bool(steps) and isinstance(steps[-1], Fetch), atomic=atomic)


def _operations(plan_: Plan[T], initial: Mapping[str, str] | None,
                pooled: bool) -> Generator[_Round | Copy | _Done[T], Any, None]:
    """Yield what to send for ``plan_`` (rounds of statements, COPYs) and receive their results; _Done at the end."""
    generator = plan_.start()
    # Outside an explicit transaction (a read-only plan, not behind a pooler) the settings go with every
    # statement: each runs in an implicit transaction of its own.
    per_statement = plan_.transactional and not _explicit_transaction(plan_, pooled)
    pending = dict(initial or {})
    result: Any = None
    sent = 0
    if pending and not plan_.transactional:
        yield _round_of([_settings_statement(pending, local=False)], [])
        pending = {}
    while True:
        try:
            step = generator.send(result)
        except StopIteration as stop:
            yield _Done(stop.value)
            return
        result = None
        if isinstance(step, SetLocal):
            if plan_.transactional:
                _check_names(step.settings)  # refused where the plan yields them, not a statement later
                pending.update(step.settings)  # sent with the next statement, in its round trip
            else:
                yield _round_of([_settings_statement(step.settings, local=False)], [])
        elif isinstance(step, Atomic):
            if plan_.transactional:
                raise TypeError("Atomic groups statements of a plan made with transactional=False")
            result = yield _round_of([], step.steps, atomic=True)
        elif isinstance(step, AfterCommit):
            if plan_.read_only or not plan_.transactional:
                raise TypeError("AfterCommit ends the transaction of a write plan")
            result = yield _Round(((step.step.query, step.step.params),), rows=True, after_commit=True)
            try:
                generator.send(result)
            except StopIteration as stop:
                yield _Done(stop.value)
                return
            raise TypeError("AfterCommit must be the last step of a plan")
        else:
            sent += 1
            if plan_.single_statement and (sent > 1 or isinstance(step, Copy)):
                raise TypeError("a plan made with single_statement=True sends exactly one statement")
            setup = [_settings_statement(pending, local=True)] if pending else []
            if not per_statement:
                pending = {}  # in a transaction, SET LOCAL lasts until it ends
            if isinstance(step, Together):
                result = yield replace(_round_of(setup, step.steps), together=len(step.steps))
            elif isinstance(step, Copy):
                if plan_.read_only:
                    raise TypeError("a read-only plan cannot COPY")
                if setup:
                    yield _round_of(setup, [])
                result = yield step
            else:
                result = yield _round_of(setup, [step])


def _not_started(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], error: Exception) -> Exception:
    # BEGIN is the first round trip of a plan in a transaction: failing on a dead connection, it sent nothing of it.
    if conn.closed or (isinstance(error, psycopg.OperationalError)
                       and not isinstance(error, psycopg.errors.QueryCanceled)):
        lost = NotStarted(f"the connection was found dead before the plan began: {error!r}")
        lost.__cause__ = error
        return lost
    return error


def _explicit_transaction(plan_: Plan[Any], pooled: bool) -> bool:
    return plan_.transactional and (pooled or not (plan_.read_only or plan_.single_statement))


def _together(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> Any:
    """Return the (sync or async) context in which a round's statements are sent together."""
    if _PIPELINE:
        return conn.pipeline()
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return conn.transaction()
    return _NO_TRANSACTION


def _split(operation: _Round) -> tuple[tuple[_Statement, ...], tuple[_Statement, ...]]:
    """Return a Together round's setup statements and the statements whose rows are wanted."""
    cut = len(operation.statements) - operation.together
    return operation.statements[:cut], operation.statements[cut:]


class _Transaction:
    """A plan's explicit transaction (or none), which an AfterCommit step may end before the plan does."""

    def __init__(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], explicit: bool) -> None:
        self._inner: Any = conn.transaction() if explicit else None

    def __enter__(self) -> _Transaction:
        if self._inner is not None:
            self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.__exit__(*exc)

    async def __aenter__(self) -> _Transaction:
        if self._inner is not None:
            await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.__aexit__(*exc)

    def commit(self) -> None:
        """Commit now; the end of the ``with`` block then does nothing."""
        self.__exit__(None, None, None)

    async def acommit(self) -> None:
        """Commit now, from async code; the end of the ``async with`` block then does nothing."""
        await self.__aexit__(None, None, None)


# -- sync ------------------------------------------------------------------------------------------------


def drive(conn: psycopg.Connection[Any], plan_: Plan[T], initial: Mapping[str, str] | None = None, *,
          pooled: bool = False) -> T:
    """Run ``plan_`` on ``conn`` (see the module docstring) and return its result; psycopg errors propagate.

    ``pooled``: ``conn`` goes through a transaction pooler. Raises NotStarted when a plan's BEGIN finds the
    connection dead: nothing of the plan was sent.
    """
    operations = _operations(plan_, initial, pooled)
    began = False
    try:
        with conn.cursor(row_factory=dict_row) as cursor, \
                _Transaction(conn, _explicit_transaction(plan_, pooled)) as transaction:
            began = True
            operation = next(operations)
            while not isinstance(operation, _Done):
                if isinstance(operation, _Round) and operation.after_commit:
                    with conn.pipeline() if _PIPELINE and not pooled else _NO_TRANSACTION:
                        transaction.commit()  # in a pipeline COMMIT is queued, sent with the next statement
                        cursor.execute(*operation.statements[0])
                    operation = operations.send(cursor.fetchall())
                else:
                    operation = operations.send(_perform(conn, cursor, operation))
            return operation.value
    except Exception as error:
        if began:
            raise
        raise _not_started(conn, error) from error


def _perform(conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any], operation: _Round | Copy) -> Any:
    if isinstance(operation, _Round) and operation.together:
        head, wanted = _split(operation)
        cursors = [conn.cursor(row_factory=dict_row) for _ in wanted]
        with _together(conn):
            for query, params in head:
                conn.execute(query, params)
            for each, statement in zip(cursors, wanted, strict=True):
                each.execute(*statement)
        return [each.fetchall() for each in cursors]
    if isinstance(operation, Copy):
        count = 0
        with cursor.copy(operation.query) as copy:
            copy.set_types(list(operation.types))
            for row in operation.rows:
                copy.write_row(row)
                count += 1
        return count
    *setup, last = operation.statements
    with conn.transaction() if operation.atomic else _NO_TRANSACTION:
        if setup:
            with _together(conn):
                for query, params in setup:
                    conn.execute(query, params)
                cursor.execute(*last)
        else:
            cursor.execute(*last)
        return cursor.fetchall() if operation.rows else cursor.rowcount


# -- async -----------------------------------------------------------------------------------------------


async def adrive(conn: psycopg.AsyncConnection[Any], plan_: Plan[T], initial: Mapping[str, str] | None = None, *,
                 pooled: bool = False) -> T:
    """Run ``plan_`` on ``conn`` (see ``drive``) and return its result; psycopg errors propagate."""
    operations = _operations(plan_, initial, pooled)
    began = False
    try:
        async with conn.cursor(row_factory=dict_row) as cursor, \
                _Transaction(conn, _explicit_transaction(plan_, pooled)) as transaction:
            began = True
            operation = next(operations)
            while not isinstance(operation, _Done):
                if isinstance(operation, _Round) and operation.after_commit:
                    async with conn.pipeline() if _PIPELINE and not pooled else _NO_TRANSACTION:
                        await transaction.acommit()  # queued in a pipeline, as in drive
                        await cursor.execute(*operation.statements[0])
                    operation = operations.send(await cursor.fetchall())
                else:
                    operation = operations.send(await _aperform(conn, cursor, operation))
            return operation.value
    except Exception as error:
        if began:
            raise
        raise _not_started(conn, error) from error


async def _aperform(conn: psycopg.AsyncConnection[Any], cursor: psycopg.AsyncCursor[Any],
                    operation: _Round | Copy) -> Any:
    if isinstance(operation, _Round) and operation.together:
        head, wanted = _split(operation)
        cursors = [conn.cursor(row_factory=dict_row) for _ in wanted]
        async with _together(conn):
            for query, params in head:
                await conn.execute(query, params)
            for each, statement in zip(cursors, wanted, strict=True):
                await each.execute(*statement)
        return [await each.fetchall() for each in cursors]
    if isinstance(operation, Copy):
        count = 0
        async with cursor.copy(operation.query) as copy:
            copy.set_types(list(operation.types))
            for row in operation.rows:
                await copy.write_row(row)
                count += 1
        return count
    *setup, last = operation.statements
    async with conn.transaction() if operation.atomic else _NO_TRANSACTION:
        if setup:
            async with _together(conn):
                for query, params in setup:
                    await conn.execute(query, params)
                await cursor.execute(*last)
        else:
            await cursor.execute(*last)
        return await cursor.fetchall() if operation.rows else cursor.rowcount
