"""How long a value each column of the schema can hold.

PostgreSQL refuses a string longer than its ``VARCHAR(n)`` column, and a
store that writes at once (shared mode) would fail the request after its
2xx, a cache flush would leave the row out. The widths are read from the
schema file itself, so that they cannot drift from it, and every store
enforces the same ones: a request whose values do not fit is refused before
anything is stored, whatever the backend.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from presence.storage.statements import loadSchema, splitScript

_TABLE_RE: Final = re.compile(r"CREATE TABLE(?: IF NOT EXISTS)? (\w+)", re.I)
_COLUMN_RE: Final = re.compile(r"^\s*(\w+) VARCHAR\((\d+)\)", re.I | re.M)


def columnWidths(script: str) -> dict[str, dict[str, int]]:
    """The ``VARCHAR`` widths of each table's columns in a schema script.

    Args:
        script: the SQL of a schema file.

    Returns:
        For each table, the width of each of its ``VARCHAR`` columns.
    """
    widths: dict[str, dict[str, int]] = {}
    for statement in splitScript(script):
        table = _TABLE_RE.match(statement)
        if table is not None:
            widths[table.group(1)] = {
                name: int(width) for name, width in _COLUMN_RE.findall(statement)
            }
    return widths


#: Table -> column -> the most characters it holds (PostgreSQL's schema;
#: SQLite ignores the widths, but a store moved to PostgreSQL must fit).
WIDTHS: Final = columnWidths(loadSchema("postgres"))


def oversized(table: str, row: Mapping[str, object]) -> str | None:
    """Name the first value of a row that is longer than its column.

    Args:
        table: the table the row goes to.
        row: column -> value, as `presence.storage.rows` makes them.

    Returns:
        Why the row cannot be stored (``"callid longer than 255
        characters"``), or ``None`` when every value fits.
    """
    widths = WIDTHS.get(table, {})
    for column, value in row.items():
        if isinstance(value, str):
            width = widths.get(column)
            if width is not None and len(value) > width:
                return f"{column} longer than {width} characters"
    return None
