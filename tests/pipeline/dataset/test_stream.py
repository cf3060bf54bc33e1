"""The export's COPY stream against a real PostgreSQL: batches dealt to worker processes come back
in the query's order, and every way a child process can fail ends the stream with a named error."""

from __future__ import annotations

import os
import threading

import pytest

from pipeline.dataset import source, stream
from pipeline.errors import SourceSchemaError
from tests.factories import load_rows, researchers


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(stream, "BATCH_ROWS", 4)
    monkeypatch.setattr(stream, "worker_count", lambda: 3)


def ids_in_query_order(db) -> list[str]:
    with db.cursor() as cursor:
        cursor.execute(source.EXPORT_QUERY, {"teachers": list(source.DEFAULT_TEACHERS)})
        return [row[0] for row in cursor.fetchall()]


def test_results_come_back_in_the_query_order_whatever_the_workers(db, database_url, small_batches):
    load_rows(db, researchers(37))
    params = source.ConnectionParams.from_url(database_url)
    with stream.ExportStream(params, source.DEFAULT_TEACHERS, lambda columns: (os.getpid(), columns.twitter_id)) as results:
        received = list(results)
    assert [twitter_id for _, ids in received for twitter_id in ids] == ids_in_query_order(db)
    assert [len(ids) for _, ids in received] == [4] * 9 + [1]
    assert len({pid for pid, _ in received}) == 3 and os.getpid() not in {pid for pid, _ in received}


def test_an_error_raised_by_the_work_is_raised_here_as_it_was(db, database_url, small_batches):
    load_rows(db, researchers(20))

    def work(columns):
        if "7" in columns.twitter_id:
            raise KeyError("row 7")
        return len(columns.twitter_id)

    params = source.ConnectionParams.from_url(database_url)
    with pytest.raises(KeyError, match="row 7"), stream.ExportStream(params, source.DEFAULT_TEACHERS, work) as results:
        list(results)


def test_an_error_that_cannot_travel_is_named_with_its_text(db, database_url, small_batches):
    load_rows(db, researchers(8))

    def work(columns):
        raise ValueError(threading.Lock())  # a lock cannot be pickled

    params = source.ConnectionParams.from_url(database_url)
    with (
        pytest.raises(stream.ExportWorkerFailed, match="ValueError"),
        stream.ExportStream(params, source.DEFAULT_TEACHERS, work) as results,
    ):
        list(results)


def test_a_worker_that_dies_is_a_named_error_not_a_hang(db, database_url, small_batches):
    load_rows(db, researchers(20))

    def work(columns):
        os._exit(9)  # what the kernel's OOM killer leaves: no result, no error

    params = source.ConnectionParams.from_url(database_url)
    with pytest.raises(stream.ExportWorkerFailed, match="ended without a result"):
        with stream.ExportStream(params, source.DEFAULT_TEACHERS, work) as results:
            list(results)


def test_the_producers_database_error_is_raised_by_name(db, database_url, small_batches):
    with db.cursor() as cursor:
        cursor.execute("ALTER TABLE user_profiles DROP COLUMN bio")
    db.commit()
    params = source.ConnectionParams.from_url(database_url)
    with pytest.raises(SourceSchemaError, match="bio"), stream.ExportStream(params, source.DEFAULT_TEACHERS, len) as results:
        list(results)


def test_leaving_early_stops_every_child(db, database_url, small_batches):
    load_rows(db, researchers(40))
    params = source.ConnectionParams.from_url(database_url)
    with stream.ExportStream(params, source.DEFAULT_TEACHERS, len) as results:
        children = list(results._children)
        next(iter(results))
    assert all(not child.is_alive() for child in children)
