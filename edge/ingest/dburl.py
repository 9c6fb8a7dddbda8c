"""Database URLs and engines: ``sqlite:///alerts.db`` or ``postgresql://user@host[:port]/db``.

SQLAlchemy Core speaks both dialects (the upsert ``ON CONFLICT DO NOTHING``, ``RETURNING``, types,
pooling, reconnects), so the rest of the ingest is written once. PostgreSQL goes through psycopg 3.

SQLite: WAL journal, a 30 s busy timeout, and every transaction opened with ``BEGIN IMMEDIATE`` (the
documented SQLAlchemy recipe) so that several worker processes on one file queue for the write lock
instead of failing half-way, and schema changes are transactional.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


class DatabaseUrlError(ValueError):
    """A database URL cannot be used; the message says which forms are understood."""


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL (driver named) of a user's ``sqlite:///…`` or ``postgresql://…`` URL."""
    scheme = urlsplit(url).scheme
    if scheme in ("sqlite", "sqlite+pysqlite"):
        if url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:") or url.endswith(":memory:"):
            raise DatabaseUrlError(f"database URL {url!r}: give a file, e.g. sqlite:///alerts.db "
                                   "(an in-memory database would be lost at exit)")
        return "sqlite+pysqlite" + url[len(scheme):]
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql+psycopg" + url[len(scheme):]
    raise DatabaseUrlError(f"database URL {url!r}: expected sqlite:///path/to/alerts.db or "
                           "postgresql://user[:password]@host[:port]/dbname")


def is_sqlite(url: str) -> bool:
    return sqlalchemy_url(url).startswith("sqlite")


def safe_url(url: str) -> str:
    """The URL with any password hidden, for log lines."""
    try:
        return make_url(sqlalchemy_url(url)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is shown as its scheme only
        return urlsplit(url).scheme + "://…"


def create_db_engine(url: str, *, write: bool = True) -> Engine:
    """An Engine for ``url``; ``write`` makes SQLite transactions take the write lock at BEGIN."""
    target = sqlalchemy_url(url)
    if target.startswith("sqlite"):
        engine = create_engine(target, connect_args={"timeout": 30.0})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below open transactions
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: a committed row survives a process kill
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    # pre_ping: a connection the server dropped (restart) is replaced before use, not failed on.
    return create_engine(target, pool_pre_ping=True, pool_size=2, max_overflow=2)
