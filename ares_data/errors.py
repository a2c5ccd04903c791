"""Every exception of the toolkit, under one root.

    AresError                 anything the CLI turns into one line and a non-zero exit
    ├── StoreError            the store cannot be opened, migrated or written
    │   ├── ReadOnlyError     a write was attempted through `ares sql`
    │   └── SchemaError       the store's schema is newer than this code, or the migration list is broken
    ├── ImportDataError       an input file is malformed (names file, record and field)
    ├── ImageError            a question's image no longer matches the sha256 recorded at import
    ├── TeacherError          the teacher cannot be used (permanent HTTP error, bad config)
    │   ├── QuotaError        the account is out of quota: retrying cannot help
    │   ├── RetryableError    one attempt failed in a way worth another (`retry_after`: the server's wish)
    │   ├── CallFailed        no answer after the retries (`attempts`, `permanent`, `rejected`)
    │   ├── RequestRejected   the provider refused this one request (context length, content
    │   │                     policy): its rationale fails, the run goes on
    │   ├── BatchRefused      the Batch API refused to create a batch (a 4xx): its row fails
    │   └── BudgetReached     the next call would take the estimated spend past --max-cost
    ├── InvalidAnswer         a teacher answer failed validation (`code`: a short reason kept in the store)
    │   └── PartlyInvalid     some parts of a grouped answer passed (`valid`), the rest did not
    ├── ExportError           a shard cannot be written
    ├── ReviewError           a human label, review filter or Label Studio file cannot be used
    ├── TrainingError         a model cannot be loaded or trained
    └── MissingExtra          an optional library is not installed (names the extra to install)

Errors of httpx, SQLAlchemy and datasets are translated at the boundary with
`raise ... from exc`, so callers catch `AresError` only.

Three exceptions are control flow, not errors, and stay beside the code that raises and catches
them: `teacher.calls.Deferred` (a request goes into a batch instead of being answered now),
`teacher.client.StillAnswering` (a reasoning model's read timeout, not retried: the provider may
still be answering) and `ares_train.loop.Skipped` (a stage had nothing to do; the loop goes on).
None reaches a user.
"""

from __future__ import annotations

from typing import Any


class AresError(Exception):
    """Base class: the message is one line meant for the user."""


class StoreError(AresError):
    pass


class ReadOnlyError(StoreError):
    pass


class SchemaError(StoreError):
    pass


class ImportDataError(AresError):
    def __init__(self, file: str, record: object, field: str | None, problem: str):
        self.file, self.record, self.field, self.problem = file, record, field, problem
        where = f"{file}: record {record}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")


class ImageError(AresError):
    pass


class TeacherError(AresError):
    pass


class QuotaError(TeacherError):
    pass


class RetryableError(TeacherError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class CallFailed(TeacherError):
    """No answer after the retries; `attempts` and `permanent` tell the collector what happened,
    `log` holds every HTTP attempt made (teacher.client.Attempt), for the store's audit;
    `rejected`: the provider refused this request only (RequestRejected): its rationale fails."""

    def __init__(self, message: str, attempts: int, permanent: bool, log: list | None = None,
                 rejected: bool = False):
        super().__init__(message)
        self.attempts, self.permanent, self.log, self.rejected = attempts, permanent, log or [], rejected


class RequestRejected(TeacherError):
    """A permanent refusal of one request, not of the run's settings: asking again cannot help,
    other requests can still be answered."""


class BatchRefused(TeacherError):
    """`POST /batches` answered a 4xx: the batch was not created, and asking again cannot help."""


class BudgetReached(TeacherError):
    pass


class InvalidAnswer(AresError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class PartlyInvalid(InvalidAnswer):
    def __init__(self, code: str, message: str, valid: dict[Any, Any]):
        super().__init__(code, message)
        self.valid = valid


class ExportError(AresError):
    pass


class ReviewError(AresError):
    pass


class TrainingError(AresError):
    pass


class MissingExtra(AresError):
    pass
