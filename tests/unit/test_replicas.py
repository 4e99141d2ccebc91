"""Read replica bookkeeping without a database: URL lists, WAL positions, the position book, replay checks, plans."""

from __future__ import annotations

import uuid

import pytest

from sony_rag import plans
from sony_rag.errors import InvalidInputError
from sony_rag.replicas import (
    UNKNOWN,
    PositionBook,
    ReplicaUnfit,
    check_replay,
    format_position,
    parse_position,
    split_urls,
)
from sony_rag.settings import Settings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_urls_split_on_commas_that_start_a_new_url_only() -> None:
    value = "postgresql://app:pw@h1:5432,h2:5433/shop?target_session_attrs=any , postgres://r@replica-2/shop,"
    assert split_urls(value) == ["postgresql://app:pw@h1:5432,h2:5433/shop?target_session_attrs=any",
                                 "postgres://r@replica-2/shop"]
    assert split_urls("") == []


def test_settings_read_replica_urls_from_the_environment_and_keep_them_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONY_RAG_READ_URLS", "postgresql://u:topsecret@r1/db,postgresql://u:topsecret@r2/db")
    settings = Settings()
    assert [url.get_secret_value() for url in settings.read_urls] == ["postgresql://u:topsecret@r1/db",
                                                                     "postgresql://u:topsecret@r2/db"]
    assert "topsecret" not in repr(settings)


def test_positions_round_trip_and_order_like_pg_lsn() -> None:
    assert parse_position("0/0") == 0
    assert parse_position("16/B374D848") == 0x16_B374D848
    assert format_position(parse_position("16/B374D848")) == "16/B374D848"
    assert parse_position("1/0") > parse_position("0/FFFFFFFF")
    for bad in ["", "16", "16/", "x/1", "1/123456789", "1/2/3", None, 5]:
        with pytest.raises(InvalidInputError):
            parse_position(bad)  # type: ignore[arg-type]


def test_a_conversation_needs_its_own_last_write_not_other_conversations() -> None:
    clock = Clock()
    book = PositionBook(max_lag=2.0, clock=clock)
    first, second = uuid.uuid4(), uuid.uuid4()
    book.wrote(first, 500)
    book.wrote(second, 900)
    book.wrote(first, 300)  # an older position never lowers what a read must see
    assert book.needed(first) == 500
    assert book.needed(second) == 900
    assert book.needed(uuid.uuid4()) == 0
    assert book.needed(None) == 0  # documents: nothing written


def test_old_positions_fold_into_a_floor_that_every_read_must_see() -> None:
    clock = Clock()
    book = PositionBook(max_lag=2.0, clock=clock)
    session = uuid.uuid4()
    book.wrote(session, 700)
    clock.now += 2.5
    book.wrote(uuid.uuid4(), 800)
    assert book.needed(session) == 700  # forgotten as an entry, kept by the floor
    assert book.needed(uuid.uuid4()) == 700


def test_a_write_of_unknown_outcome_keeps_its_reads_on_the_primary_until_the_bound_passes() -> None:
    clock = Clock()
    book = PositionBook(max_lag=2.0, clock=clock)
    session = uuid.uuid4()
    book.wrote(session, 100)
    book.unknown(session)
    assert book.needed(session) == UNKNOWN
    assert book.needed(uuid.uuid4()) == 0
    clock.now += 2.5
    assert book.needed(session) == 0  # a replica not lagging past the bound has replayed it, if it committed
    assert book.lagging_below() == 100


def test_the_lag_mark_is_the_newest_position_older_than_the_bound() -> None:
    clock = Clock()
    book = PositionBook(max_lag=1.0, clock=clock)
    book.wrote(None, 100)
    clock.now += 0.5
    book.wrote(None, 200)
    assert book.lagging_below() == 0
    clock.now += 0.6  # 100 is 1.1 s old, 200 is 0.6 s old
    assert book.lagging_below() == 100
    clock.now += 0.5
    assert book.lagging_below() == 200


@pytest.mark.parametrize(("in_recovery", "replayed", "needed", "lagging_below", "leave_out"), [
    (False, None, 0, 0, True),   # promoted, or a primary
    (True, None, 0, 0, True),    # not replaying (no WAL position)
    (True, "0/100", 0, 0x200, True),  # behind a position older than the bound
    (True, "0/100", 0x200, 0, False),  # behind this read's conversation only: the read moves, the replica stays
])
def test_a_replica_that_cannot_serve_a_read_says_why(in_recovery: bool, replayed: str | None, needed: int,
                                                      lagging_below: int, leave_out: bool) -> None:
    with pytest.raises(ReplicaUnfit) as raised:
        check_replay(in_recovery, replayed, needed, lagging_below, 2.0)
    assert raised.value.leave_out is leave_out


def test_a_replica_past_the_needed_position_serves() -> None:
    assert check_replay(True, "0/300", 0x200, 0x100, 2.0) == 0x300
    assert check_replay(True, "0/200", 0x200, 0x200, 2.0) == 0x200


def test_plans_say_where_they_may_run_and_which_conversation_they_touch() -> None:
    session = uuid.uuid4()
    history = plans.history(session, 10)
    assert (history.read_only, history.replica, history.session) == (True, True, session)
    write = plans.add_messages(session, [], [], [], [], None, [])
    assert (write.read_only, write.replica, write.session) == (False, False, session)
    by_keyword = plans.create_session(session_id=session, user_agent=None, current_page=None, metadata={})
    assert by_keyword.session == session
    listing = plans.recent_sessions(5)
    assert (listing.replica, listing.session) == (False, None)
    lookup = plans.get_embeddings_by_ids([uuid.uuid4()])
    assert (lookup.replica, lookup.session) == (True, None)
