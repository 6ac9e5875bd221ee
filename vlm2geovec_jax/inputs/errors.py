"""The one error type for bad input data, so every reader reports faults the same way."""
from __future__ import annotations


class RecordError(ValueError):
    """A record that cannot become a correct example.

    Carries where the fault is (file, record, field) and what was expected, so a user can find and fix the
    record without reading a traceback.
    """

    def __init__(self, message: str, *, file: str | None = None, record: str | int | None = None,
                 field: str | None = None):
        self.file, self.record, self.field, self.reason = file, record, field, message
        where = ", ".join(f"{k} {v}" for k, v in (("file", file), ("record", record), ("field", field))
                          if v is not None)
        super().__init__(f"{where}: {message}" if where else message)
