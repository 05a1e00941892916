"""The viewer's one page: served with its scripts as files, or as one self-contained report.

The page (static/index.html, view.js, view.css) is the same in both; in a report the scripts,
the chart library and the data are written into the file, and view.js answers its requests from
the embedded data instead of the server. Charts are plotly.js, the copy the `plotly` Python
package ships (MIT), read from the installed package: no CDN, works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from searchplay.sources import package_file

STATIC = Path(__file__).parent / "static"
FILES = {"view.js": "text/javascript", "view.css": "text/css"}


def plotly_js() -> Path:
    return package_file("plotly", "plotly/package_data/plotly.min.js", ">=5").path


def served_page() -> str:
    """The page as the server sends it: scripts and styles load from /static."""
    head = '<link rel="stylesheet" href="static/view.css">'
    scripts = '<script src="static/plotly.min.js"></script>\n<script src="static/view.js"></script>'
    return _fill(head, scripts)


REPORT_MARKER = "<!-- searchplay report -->"  # how `report --out` knows a file it may replace


def report_page(data: dict[str, Any]) -> str:
    """The page with styles, plotly.js, view.js and `data` inside: one file that works offline."""
    head = f"{REPORT_MARKER}\n<style>\n{(STATIC / 'view.css').read_text()}\n</style>"
    payload = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode().replace("</", "<\\/").replace("<!--", "<\\!--")
    scripts = "\n".join(
        [
            _inline(plotly_js().read_text(encoding="utf-8")),
            f"<script>window.SEARCHPLAY_REPORT = {payload};</script>",
            _inline((STATIC / "view.js").read_text()),
        ]
    )
    return _fill(head, scripts)


def _inline(js: str) -> str:
    if "</script" in js.lower():  # would end the element early; never true of the files we inline today
        raise ValueError("a script to inline contains '</script'; it cannot be embedded as is")
    return f"<script>\n{js}\n</script>"


def _fill(head: str, scripts: str) -> str:
    page = (STATIC / "index.html").read_text()
    return page.replace("<!--HEAD-->", head).replace("<!--SCRIPTS-->", scripts)
