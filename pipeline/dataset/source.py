"""Reading scored profiles from PostgreSQL: connection, the export query, a streaming cursor."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from pipeline import contracts
from pipeline.errors import DatabaseUnavailable, InvalidArgument, SourceSchemaError

# The spec's two teachers ("WHERE ps.scored_by IN (...)").
DEFAULT_TEACHERS: tuple[str, ...] = ("claude-haiku-20240307", "gemini-2.0-flash")

CONNECT_TIMEOUT_SECONDS = 10

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


def parse_teachers(value: str | list[str]) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]`` -> ("a", "b"), duplicates and blanks removed."""
    text = value if isinstance(value, str) else ",".join(str(part) for part in value)
    teachers = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not teachers:
        raise InvalidArgument(f"--teachers needs at least one name, got {text!r}")
    return teachers


SCORES_BY_TEACHER_QUERY = "SELECT scored_by, count(*) FROM profile_scores GROUP BY scored_by ORDER BY scored_by"


SECRET_KEYWORDS = frozenset({"password", "sslpassword"})
# The CAs that sign Amazon RDS servers (scripts/rds_ca_bundle.py says where they come from).
RDS_CA_BUNDLE = Path(__file__).with_name("rds-ca-bundle.pem")
SCHEMA_SQL = Path(__file__).with_name("schema.sql")  # the spec's tables (tests, benchmarks, demo)
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


def schema_error(exc: psycopg2.Error) -> SourceSchemaError:
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
        raise schema_error(exc) from None


def schema_sql() -> str:
    return SCHEMA_SQL.read_text(encoding="utf-8")


def ensure_schema(conn: psycopg2.extensions.connection) -> None:
    """Create the spec's tables if absent (tests, benchmarks, demo). Never alters existing ones."""
    with conn.cursor() as cursor:
        cursor.execute(schema_sql())
    conn.commit()
