"""The export's COPY stream against a real PostgreSQL: batches dealt to worker processes come back
in the query's order, and every way a child process can fail ends the stream with a named error."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import pytest

from pipeline.dataset import source, stream
from pipeline.errors import DatabaseUnavailable, ExportWorkerFailed, SourceSchemaError
from tests.factories import load_rows, profile, researchers, score


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(stream, "BATCH_ROWS", 4)
    monkeypatch.setattr(stream, "worker_count", lambda: 3)


@pytest.fixture
def no_hang():
    """A stream that would wait forever fails the test instead (forked children do not inherit it)."""

    def hung(signum, frame):
        raise TimeoutError("the export stream hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def rows(columns) -> int:
    return len(columns.twitter_id)


@contextlib.contextmanager
def exported(params, work):
    """The stream's results of ``work``, the COPY started and the workers forked."""
    with stream.ExportStream(params, source.DEFAULT_TEACHERS) as export:
        yield export.results(work)


def ids_in_query_order(db) -> list[str]:
    with db.cursor() as cursor:
        cursor.execute(source.EXPORT_QUERY, {"teachers": list(source.DEFAULT_TEACHERS)})
        return [row[0] for row in cursor.fetchall()]


def test_results_come_back_in_the_query_order_whatever_the_workers(db, database_url, small_batches):
    load_rows(db, researchers(37))
    params = source.ConnectionParams.from_url(database_url)
    with exported(params, lambda columns: (os.getpid(), columns.twitter_id)) as results:
        received = list(results)
    assert [twitter_id for _, ids in received for twitter_id in ids] == ids_in_query_order(db)
    assert [len(ids) for _, ids in received] == [4] * 9 + [1]
    assert len({pid for pid, _ in received}) == 3 and os.getpid() not in {pid for pid, _ in received}


# Every character COPY's text format escapes, the text of its NULL marker, characters it leaves as
# they are but Python's str.splitlines would split at, and quotes (CSV's own escape).
HOSTILE_TEXTS = [
    "tab\there, newline\nthere, CR\rthere",
    "back\\slash \\N \\\\ \\t (the text, not escapes)",
    "\\N",
    "\bbackspace \fform feed \vvertical tab",
    "file sep\x1c next line\x85 line sep\u2028 para sep\u2029",
    "quotes \"double\" 'single', commas, ; semicolons",
    "",
    "   ",
    "emoji \U0001f9ea and \u200dzero-width joiner, RTL \u202eoverride",
]


def test_each_field_reaches_the_work_as_the_query_returned_it(db, database_url, small_batches):
    """The oracle is psycopg2's own fetch of the same query: the COPY text format, split and
    unescaped by hand (stream.copy_columns), must give the very same values, NULLs included."""
    texts = [*HOSTILE_TEXTS, None]
    rows = [
        (
            profile(f"{900 + i}", f"user_{i}", display_name=text, bio=text and f"{text} / {text}", location=text),
            [score(f"{900 + i}", reason=f"reason: {text}")],
        )
        for i, text in enumerate(texts)
    ]
    load_rows(db, rows)
    params = source.ConnectionParams.from_url(database_url)
    with exported(params, lambda columns: list(zip(*columns, strict=True))) as results:
        received = [row for batch in results for row in batch]
    with db.cursor() as cursor:
        cursor.execute(source.EXPORT_QUERY, {"teachers": list(source.DEFAULT_TEACHERS)})
        expected = [tuple(value if value is None or isinstance(value, int) else str(value) for value in row) for row in cursor.fetchall()]
    assert len(received) == len(texts)
    assert received == expected
    assert {row[2] for row in received} == set(texts)  # display_name: each text, and NULL, made it through


def decoded_by_hand(line: str) -> list:
    """COPY's text format read field by field, character by character: the oracle for copy_columns."""
    values = []
    for field in line.split("\t"):
        if field == "\\N":
            values.append(None)
            continue
        out, characters = [], iter(field)
        for character in characters:
            if character == "\\":
                escaped = next(characters)
                character = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}.get(escaped, escaped)
            out.append(character)
        values.append("".join(out))
    return values


def test_every_field_of_a_batch_is_unescaped_wherever_its_backslashes_are():
    # Escapes in the first and the last text field, in neighbouring fields, several in one field,
    # NULL in every position, a text "\N", and the batch's last row's fields.
    width = len(stream.SourceColumns._fields)
    rows = [
        ["\\N"] * (width - 1) + ["1"],
        ["a\\tb", "c\\nd\\\\e", "\\\\N", "plain", "\\b\\f\\v\\r", "x"] + ["y"] * (width - 8) + ["end\\\\", "2"],
        ["1"] + ["\\N", "z"] * ((width - 2) // 2) + ["\\N"] * ((width - 2) % 2) + ["3"],
        ["\\\\x\\\\"] * (width - 1) + ["1"],
    ]
    lines = ["\t".join(row) for row in rows]
    columns = stream.copy_columns("".join(line + "\n" for line in lines).encode())
    expected = [decoded_by_hand(line) for line in lines]
    assert [list(row) for row in zip(*columns, strict=True)] == [[*values[:-1], int(values[-1])] for values in expected]
    assert columns.display_name[1] == "\\N" and columns.handle[1] == "c\nd\\e" and columns.twitter_id[3] == "\\x\\"


def test_a_batch_whose_rows_are_not_the_query_width_is_a_named_error_not_shifted_columns():
    """A line with a field too many or too few (a COPY of another query, a cut line) would shift
    every later field into the wrong column: it is refused by name."""
    good = "\t".join(["1", "h", "n", "b", "r", "c", "2015-03-01", "12", "l", "0.9", "why", "t", "1"]) + "\n"
    assert stream.copy_columns(good.encode()).handle == ["h"]
    for bad in (good.replace("\tl\t", "\t"), good.replace("\tl\t", "\tl\tx\t"), good + "cut\n"):
        with pytest.raises(ExportWorkerFailed, match="fields, not 13 a row"):
            stream.copy_columns((good + bad).encode())


def test_an_error_raised_by_the_work_is_raised_here_as_it_was(db, database_url, small_batches):
    load_rows(db, researchers(20))

    def work(columns):
        if "7" in columns.twitter_id:
            raise KeyError("row 7")
        return len(columns.twitter_id)

    params = source.ConnectionParams.from_url(database_url)
    with pytest.raises(KeyError, match="row 7"), exported(params, work) as results:
        list(results)


def test_an_error_that_cannot_travel_is_named_with_its_text(db, database_url, small_batches):
    load_rows(db, researchers(8))

    def work(columns):
        raise ValueError(threading.Lock())  # a lock cannot be pickled

    params = source.ConnectionParams.from_url(database_url)
    with (
        pytest.raises(ExportWorkerFailed, match="ValueError"),
        exported(params, work) as results,
    ):
        list(results)


def test_a_worker_that_dies_is_a_named_error_not_a_hang(db, database_url, small_batches, no_hang):
    load_rows(db, researchers(20))

    def work(columns):
        os._exit(9)  # what the kernel's OOM killer leaves: no result, no error

    params = source.ConnectionParams.from_url(database_url)
    with pytest.raises(ExportWorkerFailed, match="ended without a result"):
        with exported(params, work) as results:
            list(results)


def test_the_producers_database_error_is_raised_by_name(db, database_url, small_batches):
    with db.cursor() as cursor:
        cursor.execute("ALTER TABLE user_profiles DROP COLUMN bio")
    db.commit()
    params = source.ConnectionParams.from_url(database_url)
    with pytest.raises(SourceSchemaError, match="bio"), exported(params, rows) as results:
        list(results)


def test_leaving_early_stops_every_child(db, database_url, small_batches):
    load_rows(db, researchers(40))
    params = source.ConnectionParams.from_url(database_url)
    with stream.ExportStream(params, source.DEFAULT_TEACHERS) as export:
        next(export.results(rows))
        children = list(export._children)
    assert len(children) == 1 + 3 and all(not child.is_alive() for child in children)


def test_the_copy_runs_on_entering_before_any_worker_exists(db, database_url, small_batches, no_hang):
    """The server runs the query (it sorts it whole before its first row) while the caller imports
    and queries: the COPY is sent on entering, and this small one runs to its end (the pipes hold
    its batches) before results() forks a worker."""
    load_rows(db, researchers(12))
    params = source.ConnectionParams.from_url(database_url)
    with stream.ExportStream(params, source.DEFAULT_TEACHERS) as export:
        assert [child.name for child in export._children] == ["export-copy"]
        export._children[0].join(timeout=30)
        assert export._children[0].exitcode == 0
        assert sum(export.results(rows)) == 12


def test_leaving_before_the_results_stops_the_copy(db, database_url, small_batches, no_hang, monkeypatch):
    load_rows(db, researchers(12))
    monkeypatch.setattr(stream._Dealer, "write", lambda self, record: threading.Event().wait())  # a COPY that never ends
    params = source.ConnectionParams.from_url(database_url)
    with stream.ExportStream(params, source.DEFAULT_TEACHERS) as export:
        producer = export._children[0]
        assert producer.is_alive()
    assert not producer.is_alive()


def test_results_run_once_and_only_inside_the_block(db, database_url, small_batches, no_hang):
    load_rows(db, researchers(8))
    params = source.ConnectionParams.from_url(database_url)
    outside = stream.ExportStream(params, source.DEFAULT_TEACHERS)
    with pytest.raises(RuntimeError, match="runs once, inside the with block"):
        outside.results(rows)
    with stream.ExportStream(params, source.DEFAULT_TEACHERS) as export:
        assert sum(export.results(rows)) == 8
        with pytest.raises(RuntimeError, match="runs once"):
            export.results(rows)


def test_a_producer_that_dies_mid_copy_is_named_by_its_exit_not_a_hang(db, database_url, small_batches, no_hang, monkeypatch):
    # Killed after dealing two batches (what an out-of-memory kill leaves): no error sent, no end of
    # the batches; every worker must still see its batches end, and the parent name the producer.
    load_rows(db, researchers(40))
    deal = stream._Dealer.flush

    def dies_after_two(self):
        if self.dealt == 2:
            os._exit(9)
        deal(self)

    monkeypatch.setattr(stream._Dealer, "flush", dies_after_two)
    params = source.ConnectionParams.from_url(database_url)
    with (
        pytest.raises(ExportWorkerFailed, match="COPY process ended with exit code 9"),
        exported(params, rows) as results,
    ):
        list(results)


def test_a_connection_lost_mid_copy_is_database_unavailable(db, database_url, small_batches, no_hang, monkeypatch):
    # What psycopg2 raises out of copy_expert when the server goes away half-way (injected into the
    # producer's file, which copy_expert writes each row to).
    import psycopg2

    load_rows(db, researchers(40))
    deal = stream._Dealer.write

    def loses_the_server(self, record):
        if self.dealt == 3:
            raise psycopg2.OperationalError("server closed the connection unexpectedly\n\tThis probably means ...")
        deal(self, record)

    monkeypatch.setattr(stream._Dealer, "write", loses_the_server)
    params = source.ConnectionParams.from_url(database_url)
    received = []
    with pytest.raises(DatabaseUnavailable, match="lost the connection to PostgreSQL during the export: server closed the connection"):
        with exported(params, rows) as results:
            received.extend(results)
    assert received == [4, 4, 4]  # the three batches dealt before the loss, then the error
