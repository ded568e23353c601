"""The real PostgreSQL the development machines run (127.0.0.1:5432, trust auth, database
`test`), registered as a second database alias so the corrections tests run on it as well as on
SQLite. Where none answers, those tests skip saying why.

Registered when tests/corrections/conftest.py is imported (at collection), before pytest-django
creates the test databases: it creates a test database of this session's own on that server
(Django's `test_` database, here named after the process so two runs never share one) and drops
it at the end.
"""

from __future__ import annotations

import os

import dj_database_url
import psycopg

ALIAS = "postgres"
URL = "postgres://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT = 2  # seconds


def unavailable_reason() -> str | None:
    """None when the server answers, else why the PostgreSQL tests are skipped."""
    try:
        psycopg.connect(URL, connect_timeout=CONNECT_TIMEOUT).close()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL answers at {URL} ({first_line}); these tests ran on SQLite only"
    return None


REASON = unavailable_reason()
AVAILABLE = REASON is None
# The aliases a test touching both databases asks pytest-django for.
DATABASES = ["default", ALIAS] if AVAILABLE else ["default"]


def register() -> None:
    """Add the PostgreSQL alias to Django's databases (with Django's defaults filled in)."""
    from django.conf import settings
    from django.db import connections

    if not AVAILABLE or ALIAS in settings.DATABASES:
        return
    config = dj_database_url.parse(URL)
    config["TEST"] = {"NAME": f"test_digits_{os.getpid()}"}
    configured = connections.configure_settings({**settings.DATABASES, ALIAS: config})
    # connections.settings is settings.DATABASES itself (pytest-django edits it the same way).
    settings.DATABASES[ALIAS] = configured[ALIAS]
