"""One page of table rows: a text filter, a sort on an allowed key, and a slice.

The server answers every table request with this, so a page never receives more than `limit`
rows however large the run; `report.html` runs the same three steps in the page (view.js,
`queryRows`) on the rows it embeds.
"""

from __future__ import annotations

from typing import Any, TypedDict

MAX_LIMIT = 500


class Page(TypedDict):
    total: int
    offset: int
    rows: list[dict[str, Any]]


class QueryError(ValueError):
    """A table request outside what the table allows; the message names the parameter."""


def page(
    rows: list[dict[str, Any]],
    text: str,
    fields: tuple[str, ...],
    sort: str,
    sorts: tuple[str, ...],
    desc: bool,
    offset: int,
    limit: int,
) -> Page:
    """Rows whose `fields` contain `text` (any case), sorted by `sort` (lists by length, None last), then one slice."""
    if sort and sort not in sorts:
        raise QueryError(f"sort {sort!r}: sortable columns are {', '.join(sorts)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit {limit}: allowed 1..{MAX_LIMIT}")
    if offset < 0:
        raise QueryError(f"offset {offset}: must be 0 or more")
    needle = text.strip().lower()
    if needle:
        rows = [r for r in rows if any(needle in str(r.get(f) or "").lower() for f in fields)]
    if sort:
        present = [r for r in rows if r.get(sort) is not None]
        present.sort(key=lambda r: len(r[sort]) if isinstance(r[sort], list) else r[sort], reverse=desc)
        rows = present + [r for r in rows if r.get(sort) is None]
    return {"total": len(rows), "offset": offset, "rows": rows[offset : offset + limit]}
