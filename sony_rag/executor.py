"""Plans and the two executors that drive them: the only code that differs between sync and async.

A plan is a generator that yields steps (SQL to run) and receives each step's result; it holds the logic
of an operation once, with no I/O. ``drive`` and ``adrive`` run a plan on one connection inside one
transaction, so a plan is all-or-nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    """Set server settings for the rest of this transaction only (works behind transaction poolers)."""

    settings: Mapping[str, str]


Step = Fetch | Execute | Copy | SetLocal
PlanGenerator = Generator[Step, Any, T]

# Settings a plan may change with SET LOCAL; a fixed set so no name is ever taken from user input.
_LOCAL_SETTINGS = frozenset(
    {"statement_timeout", "ivfflat.probes", "ivfflat.iterative_scan", "ivfflat.max_probes", "hnsw.ef_search",
     "hnsw.iterative_scan", "hnsw.max_scan_tuples", "enable_indexscan", "enable_seqscan", "work_mem",
     "maintenance_work_mem", "lock_timeout", "plan_cache_mode"}
)


@dataclass(frozen=True)
class Plan(Generic[T]):
    """A restartable operation: ``start()`` returns a fresh generator, so a failed read can be retried."""

    factory: Callable[[], PlanGenerator[T]]
    read_only: bool

    def start(self) -> PlanGenerator[T]:
        """Return a new generator for this plan."""
        return self.factory()


def plan(*, read_only: bool) -> Callable[[Callable[P, PlanGenerator[T]]], Callable[P, Plan[T]]]:
    """Return a decorator that turns a generator function into a function returning a ``Plan``."""

    def decorate(function: Callable[P, PlanGenerator[T]]) -> Callable[P, Plan[T]]:
        @functools.wraps(function)
        def build(*args: P.args, **kwargs: P.kwargs) -> Plan[T]:
            return Plan(functools.partial(function, *args, **kwargs), read_only)

        return build

    return decorate


def fetch(query: Query) -> Fetch:
    """Return a Fetch step for a ``(query, params)`` pair."""
    return Fetch(*query)


def execute(query: Query) -> Execute:
    """Return an Execute step for a ``(query, params)`` pair."""
    return Execute(*query)


def _set_local_query(settings: Mapping[str, str]) -> Query:
    unknown = set(settings) - _LOCAL_SETTINGS
    if unknown:
        raise ValueError(f"setting(s) not allowed in SET LOCAL: {sorted(unknown)}")
    calls = []
    params: dict[str, Any] = {}
    for index, (name, value) in enumerate(sorted(settings.items())):
        calls.append(sql.SQL("set_config({}, {}, true)").format(sql.Placeholder(f"n{index}"),
                                                                 sql.Placeholder(f"v{index}")))
        params[f"n{index}"] = name
        params[f"v{index}"] = str(value)
    return sql.SQL("SELECT ") + sql.SQL(", ").join(calls), params


def drive(conn: psycopg.Connection[Any], plan_: Plan[T], initial: Mapping[str, str] | None = None) -> T:
    """Run ``plan_`` on ``conn`` inside one transaction and return its result; psycopg errors propagate."""
    generator = plan_.start()
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        if initial:
            cursor.execute(*_set_local_query(initial))
        result: Any = None
        while True:
            try:
                step = generator.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(step, Fetch):
                cursor.execute(step.query, step.params)
                result = cursor.fetchall()
            elif isinstance(step, Execute):
                cursor.execute(step.query, step.params)
                result = cursor.rowcount
            elif isinstance(step, SetLocal):
                cursor.execute(*_set_local_query(step.settings))
                result = None
            else:
                count = 0
                with cursor.copy(step.query) as copy:
                    copy.set_types(list(step.types))
                    for row in step.rows:
                        copy.write_row(row)
                        count += 1
                result = count


async def adrive(conn: psycopg.AsyncConnection[Any], plan_: Plan[T],
                 initial: Mapping[str, str] | None = None) -> T:
    """Run ``plan_`` on ``conn`` inside one transaction and return its result; psycopg errors propagate."""
    generator = plan_.start()
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        if initial:
            await cursor.execute(*_set_local_query(initial))
        result: Any = None
        while True:
            try:
                step = generator.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(step, Fetch):
                await cursor.execute(step.query, step.params)
                result = await cursor.fetchall()
            elif isinstance(step, Execute):
                await cursor.execute(step.query, step.params)
                result = cursor.rowcount
            elif isinstance(step, SetLocal):
                await cursor.execute(*_set_local_query(step.settings))
                result = None
            else:
                count = 0
                async with cursor.copy(step.query) as copy:
                    copy.set_types(list(step.types))
                    for row in step.rows:
                        await copy.write_row(row)
                        count += 1
                result = count
