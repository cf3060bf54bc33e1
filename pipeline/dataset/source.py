"""Reading scored profiles from PostgreSQL: connection, the export query, a streaming cursor."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import itertools
import json
import multiprocessing
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from pipeline import contracts
from pipeline.dataset.records import SourceColumns  # the row type lives with the pure code that reads it
from pipeline.errors import DatabaseUnavailable, InvalidArgument, SourceSchemaError

# The spec's two teachers ("WHERE ps.scored_by IN (...)").
DEFAULT_TEACHERS: tuple[str, ...] = ("claude-haiku-20240307", "gemini-2.0-flash")

CONNECT_TIMEOUT_SECONDS = 10
# Rows handed to the export's rules at a time (about 0.5 MB): memory is bounded by this and by the
# pipe from the COPY's process (PIPE_BYTES, Linux's default ceiling for an unprivileged process),
# not by the table.
BATCH_ROWS = 1000
PIPE_BYTES = 1 << 20

# The spec's query, plus what its template needs (created_at, follower_count, location) and the
# rules that make one row per profile:
#   * one score per profile: the most recent score among the allowed teachers (ties: teacher name);
#   * one profile per handle: handle_rank 1 is the most recently scored profile carrying that
#     handle (case-insensitive); the export rejects the others as duplicate_handle, counted.
# The outer ORDER BY keeps the spec's "ORDER BY ps.scored_at DESC". Every column arrives as text:
# the export needs no other type, the casts make it independent of the column types (TEXT or BIGINT
# ids, TEXT or NUMERIC scores), and the server formats dates faster than the client parses them.
EXPORT_QUERY = """
SELECT twitter_id, handle, display_name, bio, likely_is, category, created_at, follower_count,
       location, score, reason, scored_by, handle_rank
FROM (
    SELECT latest.*,
           row_number() OVER (PARTITION BY lower(btrim(latest.handle))
                              ORDER BY latest.scored_at DESC, latest.twitter_id) AS handle_rank
    FROM (
        SELECT DISTINCT ON (ps.twitter_id)
               p.twitter_id::text AS twitter_id,
               p.username AS handle,
               p.display_name,
               p.bio,
               p.likely_is,
               p.category,
               to_char(p.created_at, 'YYYY-MM-DD') AS created_at,
               p.follower_count::text AS follower_count,
               p.location,
               ps.score::text AS score,
               ps.reason,
               ps.scored_by,
               ps.scored_at
        FROM profile_scores ps
        JOIN user_profiles p ON ps.twitter_id = p.twitter_id
        WHERE ps.scored_by = ANY(%(teachers)s)
        ORDER BY ps.twitter_id, ps.scored_at DESC, ps.scored_by
    ) latest
) ranked
ORDER BY scored_at DESC, twitter_id
"""

SCORES_BY_TEACHER_QUERY = "SELECT scored_by, count(*) FROM profile_scores GROUP BY scored_by ORDER BY scored_by"


SECRET_KEYWORDS = frozenset({"password", "sslpassword"})
# The CAs that sign Amazon RDS servers (scripts/rds_ca_bundle.py says where they come from).
RDS_CA_BUNDLE = Path(__file__).with_name("rds-ca-bundle.pem")
SSL_MODES = contracts.DATABASE_SSL_MODES
DEFAULT_SSL_MODE = contracts.DEFAULT_DATABASE_SSL_MODE


def check_ssl_mode(value: str) -> str:
    if value not in SSL_MODES:
        raise InvalidArgument(f"sslmode must be one of {', '.join(SSL_MODES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class ConnectionParams:
    """libpq keywords (host, port, dbname, user, password, ...). Never logged with the password."""

    keywords: Mapping[str, Any]

    def __repr__(self) -> str:
        shown = {key: ("***" if key in SECRET_KEYWORDS else value) for key, value in self.keywords.items()}
        return f"ConnectionParams(keywords={shown!r})"

    @classmethod
    def from_url(cls, url: str) -> ConnectionParams:
        try:
            return cls(psycopg2.extensions.parse_dsn(url))
        except psycopg2.ProgrammingError:
            # libpq's message quotes the part it could not parse, which can be the password: never repeated.
            raise InvalidArgument(
                "malformed database URL (expected postgresql://user:password@host:port/dbname, special characters in "
                "the password percent-encoded; the URL is not shown because it may hold the password)"
            ) from None

    @classmethod
    def from_secret(cls, secret_string: str, sslmode: str = DEFAULT_SSL_MODE, ca_bundle: Path = RDS_CA_BUNDLE) -> ConnectionParams:
        """An RDS-style Secrets Manager secret: JSON with host, port, username, password, dbname.

        TLS is the caller's (the stack's) choice, not the secret's: ``sslmode`` with ``ca_bundle`` as
        the trusted roots. A secret's own "sslmode" key is not read.
        """
        try:
            secret = json.loads(secret_string)
        except json.JSONDecodeError:
            raise InvalidArgument("database secret is not JSON (expected host, port, username, password, dbname)") from None
        missing = [key for key in ("host", "username", "password") if not secret.get(key)]
        if missing:
            raise InvalidArgument(f"database secret lacks {', '.join(missing)}")
        return cls(
            {
                "host": secret["host"],
                "port": str(secret.get("port", 5432)),
                "user": secret["username"],
                "password": secret["password"],
                "dbname": secret.get("dbname") or secret.get("database") or "postgres",
                "sslmode": check_ssl_mode(sslmode),
                **({"sslrootcert": str(ca_bundle)} if sslmode.startswith("verify-") else {}),
            }
        )

    @property
    def where(self) -> str:
        host = self.keywords.get("host") or "localhost"
        port = self.keywords.get("port") or "5432"
        if str(host).startswith("/"):
            return f"socket {host}/.s.PGSQL.{port}"
        return f"{host}:{port}"


def connect(params: ConnectionParams) -> psycopg2.extensions.connection:
    """Open a connection; unreachable server or refused login -> DatabaseUnavailable (one line)."""
    keywords = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": "researcher-scorer-pipeline",
        # Dates in the template are UTC calendar days, whatever the server's default time zone.
        "options": "-c TimeZone=UTC",
        # COPY's bytes are decoded here as UTF-8, whatever the database's default client encoding.
        "client_encoding": "UTF8",
    }
    keywords.update(params.keywords)
    try:
        return psycopg2.connect(**keywords)
    except psycopg2.OperationalError as exc:
        first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "connection failed")
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {params.where}: {first_line}") from None


def _schema_error(exc: psycopg2.Error) -> SourceSchemaError:
    detail = (exc.pgerror or str(exc)).strip().splitlines()[0]
    return SourceSchemaError(f"the source tables do not match the export query: {detail}")


def scores_by_teacher(conn: psycopg2.extensions.connection) -> dict[str, int]:
    """How many scores each teacher has, allowed or not (for the manifest: why rows are excluded)."""
    try:
        with conn.cursor() as cursor:
            cursor.execute(SCORES_BY_TEACHER_QUERY)
            return {teacher: count for teacher, count in cursor.fetchall()}
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn) as exc:
        conn.rollback()
        raise _schema_error(exc) from None


class LatestScores:
    """The export query's rows, streamed out of ``COPY (...) TO STDOUT`` in CSV, as batches of
    BATCH_ROWS rows in columns. A context manager: ``with LatestScores(params, teachers) as
    batches: for columns in batches: ...``.

    COPY is PostgreSQL's fastest way out: the server formats the rows in C. A child process, forked
    on entering (before the caller opens writers or threads), receives them and writes them to a
    pipe while this process parses them (csv, in C) and runs the export's rules: the server, the
    receiving and the rules work at the same time on different cores, and the pipe bounds memory.
    (A thread could not do the receiving: psycopg2 takes the GIL for every row it hands over, so
    it would wait a switch interval per row on our rules.) Leaving the block early stops the child
    and with it the COPY; a database error is raised by name, once the child has ended.
    """

    def __init__(self, params: ConnectionParams, teachers: tuple[str, ...]) -> None:
        self.params, self.teachers = params, teachers

    def __enter__(self) -> LatestScores:
        context = multiprocessing.get_context("fork")  # nothing to pickle; Lambda has no /dev/shm for the others
        self._errors, errors_sent = context.Pipe(duplex=False)
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # Linux: room for a few batches, so the COPY never waits on our rules
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._child = context.Process(
            target=_copy_to_pipe, args=(self.params, self.teachers, write_fd, errors_sent), name="export-copy", daemon=True
        )
        self._child.start()
        os.close(write_fd)
        errors_sent.close()
        self._stream = open(read_fd, encoding="utf-8", newline="")  # noqa: SIM115 - closed in __exit__
        return self

    def __iter__(self) -> Iterator[SourceColumns]:
        rows = csv.reader(self._stream)
        try:
            while batch := list(itertools.islice(rows, BATCH_ROWS)):
                columns = [list(column) for column in zip(*batch, strict=True)]
                columns[-1] = list(map(int, columns[-1]))  # handle_rank
                yield SourceColumns(*columns)
        except (csv.Error, UnicodeDecodeError, ValueError):
            self._child.join()  # a stream cut short: the child's error says why
            self._raise_child_error()
            raise DatabaseUnavailable(f"the export's COPY stream was cut short (its process ended with {self._child.exitcode})") from None
        self._child.join()
        self._raise_child_error()
        if self._child.exitcode != 0:
            raise DatabaseUnavailable(f"the export's COPY process ended with exit code {self._child.exitcode}")

    def __exit__(self, *exc_info: object) -> None:
        if self._child.is_alive():
            self._child.terminate()
        self._child.join()
        self._stream.close()
        self._errors.close()

    def _raise_child_error(self) -> None:
        try:
            kind, message = self._errors.recv() if self._errors.poll() else (None, None)
        except EOFError:  # the child ended without an error to send
            return
        if kind is not None:
            raise (SourceSchemaError if kind == "schema" else DatabaseUnavailable)(message)


def _copy_to_pipe(
    params: ConnectionParams, teachers: tuple[str, ...], write_fd: int, errors: multiprocessing.connection.Connection
) -> None:
    """The child: its own connection, COPY's rows (one CSV record per write) into the pipe. Errors
    go back to the parent by name, as (kind, one-line message)."""
    try:
        conn = connect(params)
        conn.set_session(readonly=True)
        with open(write_fd, "wb", buffering=1 << 16) as out, conn.cursor() as cursor:
            # COPY takes no bind parameters: the teachers are quoted by psycopg2's own adapter.
            statement = cursor.mogrify(f"COPY ({EXPORT_QUERY}) TO STDOUT WITH (FORMAT csv)", {"teachers": list(teachers)})
            cursor.copy_expert(statement, out)
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn, psycopg2.errors.UndefinedFunction) as exc:
        errors.send(("schema", str(_schema_error(exc))))
    except DatabaseUnavailable as exc:
        errors.send(("unavailable", str(exc)))
    except psycopg2.Error as exc:
        errors.send(("unavailable", f"lost the connection to PostgreSQL during the export: {str(exc).strip().splitlines()[0]}"))
    except BrokenPipeError:
        pass  # the parent stopped reading: it has its own error to raise


def schema_sql() -> str:
    return resources.files("pipeline.dataset").joinpath("schema.sql").read_text(encoding="utf-8")


def ensure_schema(conn: psycopg2.extensions.connection) -> None:
    """Create the spec's tables if absent (tests, benchmarks, demo). Never alters existing ones."""
    with conn.cursor() as cursor:
        cursor.execute(schema_sql())
    conn.commit()
