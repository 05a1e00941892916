"""Screenshots of the run viewer for the docs: curves, a proposal with its verification, a solver trajectory, the pool.

    .venv/bin/python benchmarks/viewer_screenshots.py RUN_DIR [--eval DIR] [--out docs/img]

Serves RUN_DIR with `searchplay view`'s app on 127.0.0.1 and drives Debian's Chromium (Playwright).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

from searchplay.view.app import create_app
from searchplay.web import running_server

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--eval", type=Path, action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with running_server(create_app([args.run_dir], args.eval)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.screenshot(path=str(args.out / "viewer-curves.png"))
        page.click("#tabs button[data-tab=proposals]")
        page.locator("#proposals-table tbody tr", has_text="passed").first.click()
        page.wait_for_selector("#proposals-detail pre.response")
        page.screenshot(path=str(args.out / "viewer-proposals.png"), full_page=True)
        page.click("#tabs button[data-tab=trajectories]")
        page.select_option("#role-select", "solver")
        page.locator("#trajectories-table tbody tr").first.click()
        page.wait_for_selector("#trajectories-detail pre.response")
        page.locator("#trajectories-detail").screenshot(path=str(args.out / "viewer-trajectory.png"))
        page.click("#tabs button[data-tab=pool]")
        page.screenshot(path=str(args.out / "viewer-pool.png"))
        browser.close()
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('viewer-*.png')))} to {args.out}")


if __name__ == "__main__":
    main()
