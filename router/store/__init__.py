"""Request log and feedback store: SQLAlchemy 2 over SQLite (WAL) or PostgreSQL (psycopg 3)."""

from router.store.db import StoreError, create_db_engine, current_revision, head_revision, migrate
from router.store.feedback import FeedbackItem, FeedbackResult, FeedbackRow, feedback_item, store_feedback
from router.store.records import RequestRecord
from router.store.spool import Spool, SpoolError, spool_dir_for
from router.store.writer import LogClosed, RequestLog, WriterHooks, new_request_id

__all__ = [
    "FeedbackItem",
    "FeedbackResult",
    "FeedbackRow",
    "LogClosed",
    "RequestLog",
    "RequestRecord",
    "Spool",
    "SpoolError",
    "StoreError",
    "WriterHooks",
    "create_db_engine",
    "current_revision",
    "feedback_item",
    "head_revision",
    "migrate",
    "new_request_id",
    "spool_dir_for",
    "store_feedback",
]
