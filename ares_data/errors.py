"""The one exception root of the toolkit.

    AresError                 anything the CLI turns into one line and a non-zero exit
    ├── StoreError            the store cannot be opened, migrated or written
    │   └── ReadOnlyError     a write was attempted through `ares sql`
    ├── ImportDataError       an input file is malformed (names file, record and field)
    ├── TeacherError          the teacher cannot be used (permanent HTTP error, bad config)
    │   ├── QuotaError        the account is out of quota: retrying cannot help
    │   └── RequestRejected   the provider refused this one request (context length, content
    │                         policy): its rationale fails, the run goes on
    ├── ValidationError       a teacher answer failed validation (kept with its reason)
    ├── ExportError           a shard cannot be written
    ├── ReviewError           a human label, review filter or Label Studio file cannot be used
    └── TrainingError         a model cannot be loaded or trained

Errors of httpx, SQLAlchemy and datasets are translated at the boundary with
`raise ... from exc`, so callers catch `AresError` only.
"""


class AresError(Exception):
    """Base class: the message is one line meant for the user."""


class StoreError(AresError):
    pass


class ReadOnlyError(StoreError):
    pass


class ImportDataError(AresError):
    def __init__(self, file: str, record: object, field: str | None, problem: str):
        self.file, self.record, self.field, self.problem = file, record, field, problem
        where = f"{file}: record {record}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")


class TeacherError(AresError):
    pass


class QuotaError(TeacherError):
    pass


class RequestRejected(TeacherError):
    """A permanent refusal of one request, not of the run's settings: asking again cannot help,
    other requests can still be answered."""


class ValidationError(AresError):
    pass


class ExportError(AresError):
    pass


class ReviewError(AresError):
    pass


class TrainingError(AresError):
    pass
