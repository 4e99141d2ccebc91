"""Read replicas: which reads they serve, how far they must have replayed first, and which are left out a while.

A ``Database`` made with ``read_urls`` (or ``SONY_RAG_READ_URLS``) hands every plan to its ``ReplicaSet``:

* Writes, and reads that are not marked ``replica`` (capabilities, session lists, migrations, index builds), run
  on the primary. A transactional write also reads the primary's WAL insert position right after its COMMIT
  (``executor.AfterCommit``: the same round trip on a direct connection, one more behind a transaction pooler)
  and remembers it for the write's conversation (``Plan.session``; writes to no conversation, such as
  documents, under ``None``). Read inside the transaction, the position would come before the commit record,
  and a replica that has replayed that far may still not show the write (``recovery_min_apply_delay`` stops
  replay exactly there).
* A replica read (retrieval, stats, a conversation's history) goes to a replica in turn, with a probe of
  ``pg_is_in_recovery()`` and ``pg_last_wal_replay_lsn()`` sent in the same round trip, before the read's own
  statement. Under READ COMMITTED that statement's snapshot is taken after the probe, so when the probe shows the
  replica has replayed past the conversation's last write, the read sees it. When it has not, the read runs on
  the primary at once: read-your-writes, never a wait.
* A replica that is down, not in recovery (promoted), or has not replayed a write that committed more than
  ``replica_max_lag`` seconds ago is left out for ``replica_retry`` seconds, with one log line naming it
  (``user@host:port/db``, never a password); its reads go to another replica or the primary, and it is tried
  again afterwards.

Positions are remembered per conversation only while they may matter: an entry older than ``replica_max_lag``
is folded into a floor that every read must see, which a replica not lagging past the bound has passed anyway.
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from sony_rag.errors import InvalidInputError, SonyRagError
from sony_rag.executor import AfterCommit, Fetch, Plan, PlanGenerator, SetLocal, Together, fetch
from sony_rag.settings import Settings
from sony_rag.sql import replicas as replica_sql

if TYPE_CHECKING:
    from sony_rag.database import Database

logger = logging.getLogger("sony_rag")
T = TypeVar("T")

# Above every real WAL position: the position of a write whose outcome is unknown (it failed after it may have
# committed). Reads of its conversation go to the primary until the bound has passed.
UNKNOWN = 1 << 64
_POSITION = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
# A comma starts the next URL only when a URL scheme follows it: a multi-host URL keeps its own commas.
_NEXT_URL = re.compile(r"\s*,\s*(?=postgres(?:ql)?(?:\+[a-z0-9]+)?://)", re.IGNORECASE)


def split_urls(value: str) -> list[str]:
    """Return the URLs of a comma-separated list (commas inside a multi-host URL stay); blanks are dropped."""
    parts = (part.strip().strip(",").strip() for part in _NEXT_URL.split(value))
    return [part for part in parts if part]


def parse_position(text: str) -> int:
    """Return a WAL position written as PostgreSQL prints one (``16/B374D848``) as an int; raises InvalidInputError."""
    match = _POSITION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(f"a WAL position looks like '16/B374D848', got {text!r}")
    return int(match[1], 16) << 32 | int(match[2], 16)


def format_position(position: int) -> str:
    """Return ``position`` as PostgreSQL prints a WAL position (``16/B374D848``)."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


class ReplicaUnfit(Exception):
    """Raised inside a replica read when the probe shows the replica cannot serve it; the read goes elsewhere."""

    def __init__(self, reason: str, *, leave_out: bool) -> None:
        """Record why, and whether the replica is left out for a while (else only this read moves)."""
        super().__init__(reason)
        self.leave_out = leave_out


def check_replay(in_recovery: bool, replayed: str | None, needed: int, lagging_below: int,
                 max_lag: float) -> int:
    """Return how far a replica has replayed; raises ReplicaUnfit when it cannot serve a read needing ``needed``.

    ``lagging_below``: a primary position more than ``max_lag`` seconds old; a replica behind it is lagging.
    """
    if not in_recovery or replayed is None:
        raise ReplicaUnfit("it is not in recovery (promoted, or not a standby)", leave_out=True)
    position = parse_position(replayed)
    if position < lagging_below:
        raise ReplicaUnfit(f"it has replayed up to {replayed}, behind {format_position(lagging_below)} written "
                           f"more than {max_lag:g}s ago", leave_out=True)
    if position < needed:
        raise ReplicaUnfit(f"it has not replayed {format_position(needed)} yet", leave_out=False)
    return position


class PositionBook:
    """The WAL positions reads must see: per conversation written lately, a floor for the rest, lag marks."""

    def __init__(self, max_lag: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Remember positions for ``max_lag`` seconds each (then in the floor)."""
        self.max_lag = max_lag
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[Hashable, tuple[float, int]] = collections.OrderedDict()
        self._floor = 0
        # Primary positions and when they were known, oldest first, at most one per max_lag / 16: a replica that
        # has not replayed one older than max_lag is lagging past the bound.
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._mark = 0

    def wrote(self, key: Hashable, position: int) -> None:
        """Remember that ``key``'s conversation (None: documents) was written up to ``position``."""
        with self._lock:
            now = self._clock()
            old = self._entries.pop(key, (now, 0))[1]
            self._entries[key] = (now, max(old, position))
            if position != UNKNOWN and (not self._samples or now - self._samples[-1][0] >= self.max_lag / 16):
                self._samples.append((now, position))
            self._expire(now)

    def unknown(self, key: Hashable) -> None:
        """Remember that a write of ``key`` failed after it may have committed: its reads use the primary a while."""
        self.wrote(key, UNKNOWN)

    def needed(self, key: Hashable) -> int:
        """Return the position a replica must have replayed to serve a read of ``key`` (UNKNOWN: none may)."""
        with self._lock:
            self._expire(self._clock())
            entry = self._entries.get(key)
            return max(self._floor, entry[1] if entry is not None else 0)

    def lagging_below(self) -> int:
        """Return the newest primary position known for longer than the bound (0 when none)."""
        with self._lock:
            cutoff = self._clock() - self.max_lag
            while self._samples and self._samples[0][0] <= cutoff:
                self._mark = max(self._mark, self._samples.popleft()[1])
            return self._mark

    def _expire(self, now: float) -> None:
        # Entries are in the order they were last written: the oldest first.
        while self._entries:
            key, (when, position) = next(iter(self._entries.items()))
            if now - when <= self.max_lag:
                break
            del self._entries[key]
            if position != UNKNOWN:
                self._floor = max(self._floor, position)


@dataclass
class Replica:
    """One read replica: its own Database (pools, retries off) and whether it is left out, until when, why."""

    database: Database
    description: str
    out_until: float = 0.0
    reason: str | None = None


@dataclass(frozen=True)
class _Attempt:
    """Run ``plan`` on ``replica`` (None: the primary)."""

    replica: Replica | None
    plan: Plan[Any]


class ReplicaSet:
    """The read replicas of one Database: routes its plans, remembers positions, leaves failing replicas out."""

    def __init__(self, urls: Sequence[str], settings: Settings, database: Callable[..., Database]) -> None:
        """Prepare (but do not connect to) a replica for each URL; ``database`` makes each one's Database."""
        # A replica that does not answer is left out at once rather than waited for: the primary can serve.
        own = settings.model_copy(update={"read_urls": [], "connect_retries": 0,
                                          "pool_timeout": min(settings.pool_timeout, 2.0)})
        self.settings = settings
        self.book = PositionBook(settings.replica_max_lag)
        self.replicas = [Replica(made, made.description) for made in (database(url, settings=own) for url in urls)]
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._served: collections.Counter[str] = collections.Counter()

    # -- running -------------------------------------------------------------------------------------

    def run(self, plan_: Plan[T], on_primary: Callable[[Plan[Any]], Any]) -> T:
        """Run ``plan_`` where it belongs (a replica, else ``on_primary``) and return its result."""
        routing = self._routing(plan_)
        step = _advance(routing, None)
        while isinstance(step, _Attempt):
            step = _advance(routing, _attempted(step.replica.database.run if step.replica else on_primary, step.plan))
        return step.value  # type: ignore[no-any-return]

    async def arun(self, plan_: Plan[T], on_primary: Callable[[Plan[Any]], Awaitable[Any]]) -> T:
        """Run ``plan_`` where it belongs from async code (see ``run``) and return its result."""
        routing = self._routing(plan_)
        step = _advance(routing, None)
        while isinstance(step, _Attempt):
            try:
                outcome = await (step.replica.database.arun if step.replica else on_primary)(step.plan)
            except _MOVABLE as error:
                outcome = _Failed(error)
            step = _advance(routing, outcome)
        return step.value  # type: ignore[no-any-return]

    def _routing(self, plan_: Plan[T]) -> Generator[_Attempt, Any, T]:
        """Yield where to run what for ``plan_``; receive each result (a failure is thrown in); return the result."""
        if not plan_.read_only:
            if not plan_.transactional:
                return (yield _Attempt(None, plan_))  # type: ignore[no-any-return]
            try:
                value, position = yield _Attempt(None, _recording(plan_))
            except BaseException:
                self.book.unknown(plan_.session)
                raise
            self.book.wrote(plan_.session, parse_position(position))
            return value  # type: ignore[no-any-return]
        if plan_.replica:
            needed = self.book.needed(plan_.session)
            for replica in self._available() if needed != UNKNOWN else []:
                probed = _probed(plan_, needed, self.book.lagging_below(), self.book.max_lag)
                try:
                    value = yield _Attempt(replica, probed)
                except ReplicaUnfit as unfit:
                    if unfit.leave_out:
                        self._leave_out(replica, str(unfit))
                    continue
                except SonyRagError as error:
                    self._leave_out(replica, f"{type(error).__name__}: {error}", reset=True)
                    continue
                self._count(replica)
                return value  # type: ignore[no-any-return]
            self._count(None)
        return (yield _Attempt(None, plan_))  # type: ignore[no-any-return]

    # -- health ----------------------------------------------------------------------------------------

    def _available(self) -> list[Replica]:
        """Return the replicas not left out, starting with the next in turn."""
        now = time.monotonic()
        start = next(self._turn) % len(self.replicas)
        return [replica for replica in self.replicas[start:] + self.replicas[:start] if replica.out_until <= now]

    def _leave_out(self, replica: Replica, reason: str, *, reset: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if replica.out_until > now:
                return  # another call left it out already
            replica.out_until = now + self.settings.replica_retry
            replica.reason = reason
        logger.warning("sony-rag: read replica %s left out for %gs: %s; its reads go to %s", replica.description,
                       self.settings.replica_retry, reason,
                       "the other replicas or the primary" if len(self.replicas) > 1 else "the primary")
        if reset:
            # Its pooled connections are dead or suspect: a fresh pool when it is tried again.
            replica.database.reset()

    def _count(self, replica: Replica | None) -> None:
        with self._lock:
            self._served["primary" if replica is None else replica.description] += 1
            back = replica is not None and replica.reason is not None
            if back:
                assert replica is not None
                replica.reason = None
        if back:
            assert replica is not None
            logger.warning("sony-rag: read replica %s is back in use", replica.description)

    def served(self) -> dict[str, int]:
        """Return how many replica-eligible reads each server served (``primary`` and each replica's description)."""
        with self._lock:
            return dict(self._served)

    def reset(self) -> None:
        """Close every replica's pools (they reopen on next use)."""
        for replica in self.replicas:
            replica.database.reset()

    async def aclose(self) -> None:
        """Close every replica's pools from async code, awaiting the async ones on this loop."""
        for replica in self.replicas:
            await replica.database.aclose()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True)
class _Finished:
    value: Any


# What a failed attempt may raise and the routing handles (a replica read moves elsewhere); anything else propagates.
_MOVABLE = (SonyRagError, ReplicaUnfit)


def _attempted(function: Callable[[Plan[Any]], Any], plan_: Plan[Any]) -> Any:
    """Return ``function(plan_)``, or _Failed holding what it raised when the routing handles that."""
    try:
        return function(plan_)
    except _MOVABLE as error:
        return _Failed(error)


def _advance(routing: Generator[_Attempt, Any, Any], outcome: Any) -> _Attempt | _Finished:
    """Return the routing's next attempt after ``outcome`` (a failure is thrown in), or _Finished with its result."""
    try:
        if isinstance(outcome, _Failed):
            return routing.throw(outcome.error)
        return routing.send(outcome)
    except StopIteration as stop:
        return _Finished(stop.value)


def _recording(plan_: Plan[T]) -> Plan[tuple[T, str]]:
    """Return ``plan_`` followed by a read of the primary's WAL position right after its COMMIT."""

    def run() -> PlanGenerator[tuple[T, str]]:
        value = yield from plan_.start()
        rows = yield AfterCommit(fetch(replica_sql.write_position()))
        return value, str(rows[0]["position"])

    return Plan(run, plan_.read_only, plan_.transactional, plan_.single_statement, plan_.idempotent, plan_.replica,
                plan_.session)


def _probed(plan_: Plan[T], needed: int, lagging_below: int, max_lag: float) -> Plan[T]:
    """Return ``plan_`` with the replica's replay state read before its first statement, in the same round trip.

    Raises ReplicaUnfit (from the executor, before the plan sees any row) when the replica cannot serve it.
    """

    def run() -> PlanGenerator[T]:
        inner = plan_.start()
        sent: Any = None
        probed = False
        while True:
            try:
                step = inner.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if probed or isinstance(step, SetLocal):
                sent = yield step
                continue
            probed = True
            if isinstance(step, Fetch):
                state, sent = yield Together([fetch(replica_sql.replay_state()), step])
            else:
                state = yield fetch(replica_sql.replay_state())
            row = state[0]
            check_replay(bool(row["in_recovery"]), row["replayed"], needed, lagging_below, max_lag)
            if not isinstance(step, Fetch):
                sent = yield step

    return replace(plan_, factory=run)


def write_position(db: Database, session_id: Hashable) -> str | None:
    """Return the WAL position of ``db``'s last write to the session (None: none lately, or no replicas)."""
    replicas = db.replicas
    if replicas is None:
        return None
    position = replicas.book.needed(session_id)
    return None if position in (0, UNKNOWN) else format_position(position)


def observe_position(db: Database, session_id: Hashable, position: str) -> None:
    """Make ``db``'s reads of the session see everything up to ``position``; raises InvalidInputError if malformed."""
    value = parse_position(position)
    if db.replicas is not None:
        db.replicas.book.wrote(session_id, value)


__all__ = ["PositionBook", "Replica", "ReplicaSet", "ReplicaUnfit", "check_replay", "format_position",
           "observe_position", "parse_position", "split_urls", "write_position"]
