"""The PostgreSQL server the tests run against, and databases of their own on it.

The server is named by the ``PRESENCE_TEST_PG_DSN`` environment variable,
read when this module is imported; without it the tests that need one skip
with `NO_PG`.
"""

from __future__ import annotations

import os
import uuid
from typing import ClassVar

from twisted.trial.unittest import SkipTest

#: The DSN of the test PostgreSQL server, or None: tests then skip.
PG_DSN = os.environ.get("PRESENCE_TEST_PG_DSN")
NO_PG = "PRESENCE_TEST_PG_DSN is not set: no PostgreSQL server to test against"


def pgDSN(**changes: str) -> str:
    """The test server's DSN with some parameters changed."""
    assert PG_DSN is not None
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(PG_DSN)
    params.update(changes)
    return str(psycopg2.extensions.make_dsn(**params))


def pgURL(**changes: str) -> str:
    """The test server as a ``postgresql://`` URL, with some parameters changed.

    The server's ``database`` setting takes URLs; the test DSN may be either
    form.
    """
    import psycopg2.extensions

    assert PG_DSN is not None
    params = psycopg2.extensions.parse_dsn(PG_DSN)
    params.update(changes)
    user = params.get("user", "postgres")
    password = params.get("password")
    userinfo = f"{user}:{password}" if password else user
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql://{userinfo}@{host}:{port}/{params.get('dbname', 'test')}"


def pgAddress() -> tuple[str, int]:
    """The host and port of the test server."""
    import psycopg2.extensions

    assert PG_DSN is not None
    params = psycopg2.extensions.parse_dsn(PG_DSN)
    return params.get("host", "127.0.0.1"), int(params.get("port", 5432))


class PostgresDatabase:
    """A database of its own on the test server, for one test class."""

    def __init__(self) -> None:
        """Create it."""
        self.name = f"presence_test_{uuid.uuid4().hex[:12]}"
        self._admin("CREATE DATABASE " + self.name)
        self.dsn = pgDSN(dbname=self.name)
        self.url = pgURL(dbname=self.name)

    def _admin(self, sql: str) -> None:
        import psycopg2

        connection = psycopg2.connect(PG_DSN)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def drop(self) -> None:
        """Drop it, closing what is still connected."""
        self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class PostgresPerClass:
    """A mixin for test cases: a database of its own for each test class.

    ``pg`` is created before the class's first test and dropped after its
    last; without a server (`PG_DSN` unset) the class is skipped.
    """

    pg: ClassVar[PostgresDatabase]

    @classmethod
    def setUpClass(cls) -> None:
        """Create the class's database, or skip without a server."""
        if PG_DSN is None:
            raise SkipTest(NO_PG)
        cls.pg = PostgresDatabase()

    @classmethod
    def tearDownClass(cls) -> None:
        """Drop the class's database."""
        if PG_DSN is not None:
            cls.pg.drop()
