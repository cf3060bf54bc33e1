"""The database connection's parameters: the password stays out of errors and logs."""

import pytest

from pipeline.dataset.source import ConnectionParams
from pipeline.errors import InvalidArgument


def test_the_database_password_never_reaches_an_error_or_a_repr():
    """libpq quotes what it cannot parse, which can be the password; a repr is what logs print."""
    for url in ("postgresql://scorer:s3cr%zzet@db.internal/researchers", "host=db password=hunter2 user"):
        with pytest.raises(InvalidArgument) as error:
            ConnectionParams.from_url(url)
        assert "s3cr" not in str(error.value) and "hunter2" not in str(error.value)
        assert "malformed database URL" in str(error.value)
    params = ConnectionParams.from_url("postgresql://scorer:hunter2@db.internal:5432/researchers")
    assert "hunter2" not in repr(params) and "hunter2" not in str(params) and "db.internal" in repr(params)
    assert params.keywords["password"] == "hunter2"  # still what connect() uses
