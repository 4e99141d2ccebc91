"""The retry policy without a database: which connection failures are waited out, and the shared attempt."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from sony_rag.errors import DatabaseUnavailableError
from sony_rag.retry import ConnectionGate, backoff_delays, give_up_at_once, is_local, retry_cycle_seconds

REFUSED_TCP = ('connection failed: connection to server at "{host}", port 5432 failed: Connection refused\n'
               "\tIs the server running on that host and accepting TCP/IP connections?")
NO_SOCKET = ('connection failed: connection to server on socket "/tmp/pg/.s.PGSQL.5432" failed: '
             "No such file or directory\n\tIs the server running locally and accepting connections on that socket?")


@pytest.mark.parametrize(("conninfo", "message", "at_once"), [
    ("postgresql://u@localhost/db", REFUSED_TCP.format(host="localhost"), True),
    ("postgresql://u@127.0.0.1:1/db", REFUSED_TCP.format(host="127.0.0.1"), True),
    ("postgresql://u@[::1]/db", REFUSED_TCP.format(host="::1"), True),
    ("postgresql://u@/db?host=/tmp/pg", NO_SOCKET, True),
    ("postgresql://u@/db", NO_SOCKET, True),  # libpq's default: the local socket
    # Another machine refusing may be a proxy restarting: waited for.
    ("postgresql://u@ep-cool-123.eu-central-1.aws.neon.tech/db", REFUSED_TCP.format(host="ep-cool-123"), False),
    # What a waking compute or a pooler returns.
    ("postgresql://u@ep-cool-123-pooler.neon.tech/db", "connection timeout expired", False),
    ("postgresql://u@localhost/db", "connection timeout expired", False),
    ("postgresql://u@ep-cool-123.neon.tech/db", "ERROR: Couldn't connect to compute node", False),
    ("postgresql://u@ep-cool-123-pooler.neon.tech/db",
     "server login has been failing, try again later (server_login_retry)", False),
    ("postgresql://u@localhost/db", "FATAL: the database system is starting up", False),
    ("postgresql://u@localhost/db", "server closed the connection unexpectedly", False),
    # What waiting cannot change.
    ("postgresql://u@ep-cool-123.neon.tech/db", 'FATAL: password authentication failed for user "u"', True),
    ("postgresql://u@ep-cool-123.neon.tech/db", 'FATAL: database "shop" does not exist', True),
])
def test_which_failures_are_retried(conninfo: str, message: str, at_once: bool) -> None:
    assert give_up_at_once(psycopg.OperationalError(message), conninfo) is at_once


def test_local_means_every_host_is_this_machine() -> None:
    assert is_local("postgresql://u@localhost,127.0.0.2/db")
    assert not is_local("postgresql://u@localhost,db.example.com/db")


def test_backoff_doubles_up_to_five_seconds_and_the_cycle_counts_whole_attempts() -> None:
    assert list(backoff_delays(0.25, 6)) == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]
    # libpq waits whole seconds, at least 2, per attempt.
    assert retry_cycle_seconds(1.0, 2, 0.5) == 3 * 2 + 0.5 + 1.0
    assert retry_cycle_seconds(10.0, 5, 0.25) == 6 * 10 + 0.25 + 0.5 + 1 + 2 + 4


class _Attempts:
    """An attempt that takes ``seconds`` and fails (or succeeds), counting how often it ran."""

    def __init__(self, seconds: float, fail: bool = True) -> None:
        self.seconds, self.fail, self.count, self.dropped = seconds, fail, 0, 0

    def __call__(self) -> None:
        self.count += 1
        time.sleep(self.seconds)
        if self.fail:
            raise DatabaseUnavailableError(f"could not connect to shop@db:5432/shop (attempt {self.count})")

    def drop(self) -> None:
        self.dropped += 1


def test_threads_share_one_attempt_then_fail_fast_in_the_cool_down_then_try_again() -> None:
    attempts = _Attempts(0.3)
    gate = ConnectionGate(attempts, attempts.drop, cool_down=0.5)
    errors: list[str] = []

    def call() -> None:
        try:
            gate.pass_through()
        except DatabaseUnavailableError as error:
            errors.append(str(error))

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 0.3 * 1.5
    assert attempts.count == 1 and attempts.dropped == 1
    assert errors == ["could not connect to shop@db:5432/shop (attempt 1)"] * 50
    with pytest.raises(DatabaseUnavailableError, match="attempt 1"):
        gate.pass_through()  # in the cool-down: at once, no new attempt
    assert attempts.count == 1
    time.sleep(0.5)
    attempts.fail = False
    gate.pass_through()  # after it: a new attempt, which now succeeds
    assert attempts.count == 2 and gate.is_open and gate.failure is None


def test_tasks_share_one_attempt_and_a_cancelled_waiter_does_not_cancel_it() -> None:
    attempts = _Attempts(0.3, fail=False)
    gate = ConnectionGate(attempts, attempts.drop, cool_down=0.5)

    async def scenario() -> None:
        first = asyncio.create_task(gate.apass_through())
        others = [asyncio.create_task(gate.apass_through()) for _ in range(20)]
        await asyncio.sleep(0.05)
        first.cancel()
        await asyncio.gather(*others)
        assert first.cancelled()

    asyncio.run(scenario())
    assert attempts.count == 1 and gate.is_open
    gate.doubt()
    assert not gate.is_open
    gate.pass_through()
    assert attempts.count == 2
