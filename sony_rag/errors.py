"""Every exception sony-rag raises: catch ``SonyRagError`` for all of them.

User mistakes (bad vectors, roles, source types, filters, ids, missing sessions) are detected before
anything is written. Database failures are translated at the executor, so callers never see a raw
psycopg exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when needed: `sony-rag --help` and `import sony_rag` must not pay for psycopg
    import psycopg


class SonyRagError(Exception):
    """Base class of every sony-rag error."""


class ConfigurationError(SonyRagError):
    """Raised when settings are invalid or an optional extra that a feature needs is not installed."""


class DatabaseError(SonyRagError):
    """Raised when the database fails in a way that is not the caller's input (the transaction was rolled back)."""


class DatabaseUnavailableError(DatabaseError):
    """Raised when no connection can be had: server down, waking too slowly, pool exhausted or lost mid-call."""


class QueryTimeoutError(DatabaseError):
    """Raised when a statement exceeds the configured statement timeout (the transaction was rolled back)."""


class MigrationError(SonyRagError):
    """Raised when a migration file fails to apply or the migration history is inconsistent."""


class ChecksumMismatchError(MigrationError):
    """Raised when an already-applied migration file was edited after it was applied."""


class SchemaNotReadyError(SonyRagError):
    """Raised when the tables do not exist yet: run ``sony-rag migrate`` first."""


class IndexBuildError(SonyRagError):
    """Raised when the vector index cannot be rebuilt (e.g. k-means needs more memory than allowed); says why."""


class InvalidInputError(SonyRagError, ValueError):
    """Raised for any argument that cannot be stored or searched as given; nothing was written."""


class InvalidEmbeddingError(InvalidInputError):
    """Raised when a vector is not 384 finite floats with a non-zero norm, or embeddings have another size."""


class InvalidRoleError(InvalidInputError):
    """Raised when a chat message role is not one of ``user``, ``assistant``, ``system``."""


class InvalidSourceTypeError(InvalidInputError):
    """Raised when a source type is not one of ``product``, ``page_content``, ``faq``, ``policy``."""


class InvalidFilterError(InvalidInputError):
    """Raised when a metadata filter is malformed: unknown operator, bad key or value; the message names the part."""


class InvalidIdentifierError(InvalidInputError):
    """Raised when a session, message or document id is malformed (not a UUID where one is required, or empty)."""


class InvalidTextError(InvalidInputError):
    """Raised when text contains NUL bytes (Postgres cannot store them) or is not a string."""


class InvalidMetadataError(InvalidInputError):
    """Raised when metadata is not a JSON object that round-trips exactly (non-JSON values, NaN, NUL bytes)."""


class BadRecordError(InvalidInputError):
    """Raised by ingestion for bad input records (``errors`` lists each as ``file:line: reason``); nothing written."""

    def __init__(self, message: str, errors: Sequence[object] = ()) -> None:
        """Create the error with its message and the bad records it is about."""
        super().__init__(message)
        self.errors = list(errors)


class NotFoundError(SonyRagError, LookupError):
    """Raised when a referenced row does not exist."""


class SessionNotFoundError(NotFoundError):
    """Raised when a chat session id does not exist (and the call was not allowed to create it)."""


def translate_database_error(error: psycopg.Error) -> SonyRagError:
    """Return the sony-rag exception that stands for a psycopg error (the caller raises it ``from`` the original)."""
    import psycopg
    from psycopg import errors as pg_errors

    if isinstance(error, pg_errors.ForeignKeyViolation):
        return SessionNotFoundError("the chat session does not exist")
    if isinstance(error, pg_errors.QueryCanceled):
        return QueryTimeoutError("the statement timed out or was cancelled; nothing was written")
    if isinstance(error, pg_errors.UndefinedTable):
        return SchemaNotReadyError("sony-rag tables are missing: run `sony-rag migrate` first")
    if isinstance(error, pg_errors.CheckViolation):
        return InvalidInputError(f"a value was refused by a check constraint ({error.diag.constraint_name})")
    if isinstance(error, pg_errors.StringDataRightTruncation):
        return InvalidInputError("a value is longer than its column allows")
    if isinstance(error, pg_errors.UntranslatableCharacter | pg_errors.CharacterNotInRepertoire):
        return InvalidTextError("text contains characters Postgres cannot store")
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailableError(f"the database connection failed: {_first_line(error)}")
    return DatabaseError(f"the database refused the operation ({type(error).__name__}): {_first_line(error)}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class EmbeddingModelMismatchError(InvalidInputError):
    """Raised before anything is written when ingest would put one model's vectors beside another model's.

    ``stored_models`` names the other models found; the message gives the command that re-embeds everything.
    """

    def __init__(self, message: str, stored_models: Sequence[str] = ()) -> None:
        """Create the error with its message and the other models found in the table."""
        super().__init__(message)
        self.stored_models = list(stored_models)
