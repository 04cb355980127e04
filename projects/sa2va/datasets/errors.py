"""The one error type for bad training records.

A :class:`BadRecordError` always says *where* (file), *which* record (record id) and *what* (field), so a
user can open the file and fix the record. Datasets with ``skip_bad_records=True`` catch it, count it
under :attr:`BadRecordError.reason` in ``dataset.skip_counts`` and move on; otherwise it propagates.
"""
from __future__ import annotations

import os

__all__ = ["BadRecordError"]


class BadRecordError(ValueError):
    """A record that cannot be turned into a training sample.

    Args:
        file: the file the record came from (annotation json/pickle, or the image file).
        record_id: the record's id inside that file (e.g. ``image_id=42``, ``ref_id=7``, ``#13``).
        field: the offending field (``segmentation``, ``ann_id``, ``file_name``, ``text``, ...).
        problem: what is wrong, in words.
        reason: a short stable key for skip statistics (``missing_image``, ``bad_polygon``, ...).
    """

    def __init__(self, file: str | os.PathLike, record_id: object = None, field: str | None = None,
                 problem: str | None = None, reason: str = "bad_record"):
        self.file = os.fspath(file)
        self.record_id = None if record_id is None else str(record_id)
        self.field = field
        self.problem = problem
        self.reason = reason
        if record_id is None and field is None and problem is None:
            # one pre-formatted message: how torch's DataLoader re-raises a worker's exception in the main process
            super().__init__(self.file)
        else:
            super().__init__(f"{self.file}: record {self.record_id}: field '{field}': {problem}")

    def __reduce__(self):  # keep the arguments when the error crosses a DataLoader worker boundary
        return (type(self), (self.file, self.record_id, self.field, self.problem, self.reason))
