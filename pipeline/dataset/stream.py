"""The export query's rows out of PostgreSQL's COPY, turned into results by worker processes, back
in the query's order.

    with stream.ExportStream(params, teachers) as export:  # the COPY is sent: the server runs the query
        ...  # meanwhile: imports, the caller's own queries
        for result in export.results(work):  # work(columns) of each batch of BATCH_ROWS rows, in order
            ...

Why processes: COPY is PostgreSQL's fastest way out (the server formats the rows in C), and the
export's rules run in Python at about three times the server's cost per row (docs/benchmarks.md),
so one interpreter would leave the server waiting. On entering, a producer process is forked: it
sends the COPY at once (the server sorts the whole query before its first row, most of a small
export's time, and the caller may use that time), receives COPY's rows (psycopg2 hands over one
record per write) and deals them, BATCH_ROWS at a time, round-robin to the workers' pipes.
``results(work)`` forks worker_count() workers (before the caller opens writers or threads): each
splits its batches into columns (``copy_columns``), runs ``work`` on the columns and sends the
result back; this process reads the results in the order the batches were dealt. Pipes of fixed
capacity join them, so memory does not grow with the table. (Threads could not share the work:
psycopg2 takes the GIL for every row it hands over, and the rules hold it.)

Errors: one raised by ``work`` is raised here, as it was raised there; a database error (the
producer's) is raised by name once the results ran out; a producer or a worker that dies (killed,
out of memory) is an ExportWorkerFailed naming it; leaving the block early stops every
child, and with them the COPY. ``fork`` is used: nothing needs pickling but results, and Lambda, which has
no /dev/shm, runs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import multiprocessing
import os
import pickle
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, BinaryIO, TypeVar, cast

import psycopg2
import psycopg2.errors

from pipeline.dataset import source
from pipeline.dataset.columns import SourceColumns
from pipeline.errors import DatabaseUnavailable, ExportWorkerFailed, SourceSchemaError

# Rows per batch (about 0.5 MB of COPY's text): memory is bounded by this and by the pipes, not the table.
BATCH_ROWS = 1000
# Worker processes: two per core of this machine (a 10 GB Lambda has 6), at most MAX_WORKERS. More
# workers than cores: results are taken in order, so a worker that is behind holds the others up;
# measured at 100k rows on 2 cores (docs/benchmarks.md), 1/2/3/4 workers: 3.3/2.4/2.2/2.1 s.
WORKERS_PER_CORE = 2
MAX_WORKERS = 8
# Each pipe's capacity (Linux's default ceiling for an unprivileged process): room for batches in
# flight, so that the COPY rarely waits on a worker.
PIPE_BYTES = 1 << 20
# How long a cut result stream waits for the producer to end before naming the worker instead.
PRODUCER_GRACE_SECONDS = 5
_LENGTH = struct.Struct(">I")  # each message: its length, then its bytes; length 0 ends a stream

# COPY's text format (PostgreSQL's documentation, "COPY", File Formats, Text Format): one line per
# row, columns separated by a tab, NULL written as \N, and in the data a backslash, newline,
# carriage return, tab, backspace, form feed and vertical tab written as these backslash sequences
# (COPY TO writes no others). So a batch splits into rows and columns with str.split, in C (about
# 1.5 microseconds a row with the decoding below; the csv module took 3), and only a field holding a
# backslash needs more. By hand because no library reads COPY's text format: psycopg2 hands over its lines only.
COPY_STATEMENT = "COPY ({query}) TO STDOUT"
COPY_NULL = "\\N"
_COPY_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_COPY_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_SEPARATOR = "\t"  # between fields; a row's newline becomes one too (COPY writes neither raw in a field)

T = TypeVar("T")


def worker_count() -> int:
    # The cores this process may run on (Linux); elsewhere the machine's.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, WORKERS_PER_CORE * cores))


class ExportStream:
    def __init__(self, params: source.ConnectionParams, teachers: tuple[str, ...]) -> None:
        self.params, self.teachers = params, teachers
        self._producer: BaseProcess | None = None
        self._children: list[BaseProcess] = []  # the producer, then the workers
        self._batches_in: list[int] = []
        self._results: list[BinaryIO] = []

    def __enter__(self) -> ExportStream:
        context = multiprocessing.get_context("fork")
        self._errors, errors_sent = context.Pipe(duplex=False)
        pipes = [_pipe() for _ in range(worker_count())]
        self._batches_in = [read_fd for read_fd, _ in pipes]
        batches_out = [write_fd for _, write_fd in pipes]
        # The producer closes the batches' read ends it inherits: a worker that dies must break its
        # pipe (the producer then stops), not leave the producer waiting on a full one.
        self._producer = context.Process(
            target=_produce, args=(self.params, self.teachers, batches_out, self._batches_in, errors_sent), name="export-copy", daemon=True
        )
        self._producer.start()
        self._children.append(self._producer)
        for fd in batches_out:
            os.close(fd)
        errors_sent.close()
        return self

    def results(self, work: Callable[[SourceColumns], T]) -> Iterator[T]:
        """Forks the workers, each running ``work`` on its batches' columns; returns the results,
        in the query's order. Once per stream."""
        if self._producer is None or self._results:
            raise RuntimeError("ExportStream.results() runs once, inside the with block")
        context = multiprocessing.get_context("fork")
        while self._batches_in:
            batch_read = self._batches_in.pop(0)
            result_read, result_write = _pipe()
            self._results.append(open(result_read, "rb"))  # noqa: SIM115 - closed in __exit__
            # What this process holds of the other workers' pipes (the later ones' batches, the earlier
            # ones' results, its own results' read end) is closed in the new worker.
            inherited = [*self._batches_in, *(results.fileno() for results in self._results)]
            worker = context.Process(target=_work, args=(batch_read, result_write, inherited, work), name="export-worker", daemon=True)
            try:
                worker.start()
            finally:
                os.close(batch_read)
                os.close(result_write)
            self._children.append(worker)
        return self._in_order()

    def _in_order(self) -> Iterator[Any]:
        for index in itertools.count():
            ended = index % len(self._results)
            message = self._receive(self._results[ended])
            if message is None:
                break  # that worker has no more batches: they were dealt in turn, so no worker has
            status, value = pickle.loads(message)
            if status == "error":
                raise value
            yield value
        for position, results in enumerate(self._results):  # the other workers' end-of-stream
            if position != ended and self._receive(results) is not None:
                raise ExportWorkerFailed("an export worker sent a result after the last batch")
        producer = cast(BaseProcess, self._producer)
        producer.join()
        self._raise_producer_error()
        if producer.exitcode != 0:
            raise ExportWorkerFailed(_producer_ended(producer.exitcode))

    def __exit__(self, *exc_info: object) -> None:
        for child in self._children:
            if child.is_alive():
                child.terminate()
        for child in self._children:
            child.join()
        for results in self._results:
            results.close()
        for fd in self._batches_in:  # results() was not reached
            os.close(fd)
        self._errors.close()

    def _receive(self, results: BinaryIO) -> bytes | None:
        """The next result message; a result stream cut short is named by its cause: the producer's
        error or end when it died (its workers then end without results), else the worker's death."""
        try:
            return _receive(results)
        except ExportWorkerFailed:
            producer = cast(BaseProcess, self._producer)
            producer.join(timeout=PRODUCER_GRACE_SECONDS)
            self._raise_producer_error()
            if producer.exitcode not in (0, None):
                raise ExportWorkerFailed(
                    f"the export's COPY process ended with exit code {producer.exitcode} (killed, or out of memory)"
                ) from None
            raise

    def _raise_producer_error(self) -> None:
        try:
            kind, message = self._errors.recv() if self._errors.poll() else (None, None)
        except EOFError:  # the producer ended without an error to send
            return
        if kind is not None:
            raise (SourceSchemaError if kind == "schema" else DatabaseUnavailable)(message)


def _producer_ended(exitcode: int | None) -> str:
    return f"the export's COPY process ended with exit code {exitcode} (killed, or out of memory)"


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux; elsewhere the default capacity
        with contextlib.suppress(OSError):  # above the system's ceiling
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return read_fd, write_fd


def _send(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes | None:
    """The next message, or None at the end of the stream (a 0 length). A stream cut short means
    its writer died: ExportWorkerFailed."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise ExportWorkerFailed("an export worker process ended without a result (killed, or out of memory)")
    (length,) = _LENGTH.unpack(header)
    if length == 0:
        return None
    payload = stream.read(length)
    if len(payload) < length:
        raise ExportWorkerFailed("an export worker process ended in the middle of a result (killed, or out of memory)")
    return payload


class _Dealer:
    """copy_expert's file: gathers the records libpq hands over (one line of COPY's text format per write) and
    deals each BATCH_ROWS of them to the next worker."""

    def __init__(self, workers: Sequence[BinaryIO]) -> None:
        self.workers, self.dealt = workers, 0
        self.rows: list[bytes] = []

    def write(self, record: bytes) -> None:
        self.rows.append(record)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            _send(self.workers[self.dealt % len(self.workers)], b"".join(self.rows))
            self.rows.clear()
            self.dealt += 1


def _produce(
    params: source.ConnectionParams, teachers: tuple[str, ...], batch_fds: list[int], inherited: list[int], errors: Connection
) -> None:
    """The producer: its own connection; COPY's records dealt to the workers; then each worker's
    end-of-stream. Its errors go back by name, as (kind, one-line message)."""
    for fd in inherited:
        os.close(fd)
    workers = [open(fd, "wb") for fd in batch_fds]  # noqa: SIM115 - closed below
    try:
        conn = source.connect(params)
        conn.set_session(readonly=True)
        dealer = _Dealer(workers)
        with conn.cursor() as cursor:
            # COPY takes no bind parameters: the teachers are quoted by psycopg2's own adapter.
            statement = cursor.mogrify(COPY_STATEMENT.format(query=source.EXPORT_QUERY), {"teachers": list(teachers)})
            cursor.copy_expert(statement, dealer)
        dealer.flush()
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn, psycopg2.errors.UndefinedFunction) as exc:
        errors.send(("schema", str(source.schema_error(exc))))
    except DatabaseUnavailable as exc:
        errors.send(("unavailable", str(exc)))
    except psycopg2.Error as exc:
        errors.send(("unavailable", f"lost the connection to PostgreSQL during the export: {str(exc).strip().splitlines()[0]}"))
    except BrokenPipeError:
        return  # the parent stopped reading: it has its own error to raise
    with contextlib.suppress(BrokenPipeError):
        for worker in workers:
            _send(worker, b"")
            worker.close()


def copy_columns(batch: bytes) -> SourceColumns:
    """A batch of COPY's text-format lines (UTF-8, each ending in a newline) -> its columns, each
    field as the query returned it (None for NULL)."""
    text = batch.decode("utf-8")
    rows = text.count("\n")
    # One split of all fields (a row's end is one more field boundary), then each column a slice:
    # every step in C. "\n" only: str.splitlines would also split at characters COPY leaves as they
    # are (\x1c, \x85, U+2028).
    flat = text.replace("\n", _SEPARATOR)
    fields = cast(list[str | None], flat.split(_SEPARATOR))  # a NULL's field becomes None below
    fields.pop()  # after the last newline
    width = len(SourceColumns._fields)
    if len(fields) != rows * width:
        raise ExportWorkerFailed(f"a COPY batch of {rows} rows has {len(fields)} fields, not {width} a row")
    _unescape(flat, fields)
    columns: list[list] = [fields[position::width] for position in range(width)]
    columns[-1] = list(map(int, columns[-1]))  # handle_rank
    return SourceColumns(*columns)


def _unescape(flat: str, fields: list[str | None]) -> None:
    """The fields that hold a backslash, as values: NULL's marker -> None, the backslash sequences
    -> their characters. Each is found by str.find over the batch (a memchr-like scan) and its
    index by counting the separators before it: work for the few fields with a backslash, none for
    the others."""
    found = flat.find("\\")
    index = counted = 0
    while found >= 0:
        index += flat.count(_SEPARATOR, counted, found)
        counted = flat.find(_SEPARATOR, found)  # the field's end: every field ends with a separator here
        field = cast(str, fields[index])
        fields[index] = None if field == COPY_NULL else _COPY_ESCAPE.sub(_escaped_character, field)
        found = flat.find("\\", counted)


def _escaped_character(match: re.Match[str]) -> str:
    # A backslash before any other character stands for that character (as COPY FROM reads it).
    return _COPY_ESCAPED.get(match.group(1), match.group(1))


def _work(batch_fd: int, result_fd: int, inherited: list[int], work: Callable[[SourceColumns], object]) -> None:
    """A worker: each batch parsed into columns, ``work`` run on them, the result sent back; an
    error sent back instead, as raised. Batches that stop without their end (the producer died)
    end the worker without a word: the parent names the producer's end."""
    for fd in inherited:
        os.close(fd)
    with open(batch_fd, "rb") as batches, open(result_fd, "wb") as results:
        while True:
            try:
                batch = _receive(batches)
            except ExportWorkerFailed:
                return
            if batch is None:
                break
            try:
                message = pickle.dumps(("ok", work(copy_columns(batch))), pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - every error goes back to be raised there
                try:
                    message = pickle.dumps(("error", exc), pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001 - an error that cannot be pickled goes back as its text
                    message = pickle.dumps(("error", ExportWorkerFailed(f"{type(exc).__name__}: {exc}")), pickle.HIGHEST_PROTOCOL)
                _send(results, message)
                return
            _send(results, message)
        _send(results, b"")
