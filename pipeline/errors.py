"""Named errors of the pipeline.

The class name is the error's name everywhere: the CLI prints it, a Lambda raising it reports it as
``errorType`` and the state machine's Retry/Catch clauses match on it. So a name, once shipped, is an
interface: rename nothing.
"""


class PipelineError(Exception):
    """Base of every error a user is meant to read (no traceback, one line)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:  # one line, whatever the cause carried
        return " ".join(super().__str__().split())


class InvalidArgument(PipelineError):
    """A flag, event field or configuration value is malformed."""


class DatabaseUnavailable(PipelineError):
    """PostgreSQL could not be reached or refused the login. Transient: the state machine retries."""


class SourceSchemaError(PipelineError):
    """The source tables lack a column the export relies on."""


class InsufficientData(PipelineError):
    """Too few usable rows to train on (the spec's "Reach 1000+ scored profiles")."""


class StorageError(PipelineError):
    """An artifact could not be read or written (missing object, permission, bad URI)."""


class DatasetInvalid(PipelineError):
    """A written dataset does not agree with its manifest or with the row contract."""


class RunFolderExists(PipelineError):
    """The run's folder already holds artifacts of another run of the same name: nothing is overwritten."""


class ExportWorkerFailed(PipelineError):
    """A process of the dataset export ended without its result (killed, out of memory), or with an
    error that could not be sent back as it was (its text is kept)."""
