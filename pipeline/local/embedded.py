"""A throwaway real PostgreSQL for the demo when no database URL is given (pgserver ships one)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence

from pipeline.errors import DatabaseUnavailable


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    """Start PostgreSQL in a temporary directory; yield its URL; stop and delete it afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice, irrelevant here
        try:
            import pgserver
        except ImportError:
            raise DatabaseUnavailable(
                "no database URL given and the embedded PostgreSQL (pgserver) is not installed: pass --database-url"
            ) from None
    with tempfile.TemporaryDirectory(prefix="pipeline-postgres-") as data_dir:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("pgserver").setLevel(logging.WARNING)
            try:
                server = pgserver.get_server(data_dir, cleanup_mode="delete")
            except Exception as exc:  # pgserver raises bare exceptions from initdb/pg_ctl
                raise DatabaseUnavailable(f"could not start the embedded PostgreSQL: {exc}") from None
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


@contextlib.contextmanager
def database_url(url: str | None, sample_profiles: int, earlier_runs: Sequence[dt.datetime] = ()) -> Iterator[str]:
    """``url`` when given; otherwise an embedded PostgreSQL loaded with ``sample_profiles`` sample
    profiles for as long as the block runs (the demo's database), plus a week of newly scored
    profiles after each of ``earlier_runs`` (their datasets' export times)."""
    if url:
        yield url
        return
    from pipeline.dataset import source
    from pipeline.local import sample

    with embedded_postgres() as embedded_url:
        conn = source.connect(source.ConnectionParams.from_url(embedded_url))
        try:
            sample.load_sample(conn, sample_profiles)
            for week, exported in enumerate(earlier_runs, start=1):
                sample.load(conn, sample.week_of_new_scores(week, exported))
        finally:
            conn.close()
        yield embedded_url
