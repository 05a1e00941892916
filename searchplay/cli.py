"""The `searchplay` command line (one Typer app). Nothing else imports this module."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from searchplay.config import Config, ConfigError, load_config, to_toml

app = typer.Typer(help="Search self-play: train LLM search agents without human supervision.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
assets_app = typer.Typer(help="Build and inspect the embedded default (model, corpus, QA sets, seeds, index).", no_args_is_help=True)
config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
index_app = typer.Typer(help="Build retrieval indexes over a corpus.", no_args_is_help=True)
app.add_typer(assets_app, name="assets")
app.add_typer(config_app, name="config")
app.add_typer(index_app, name="index")

console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: section.field=value (repeatable)")]


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _config(path: Optional[Path], overrides: Optional[list[str]]) -> Config:
    try:
        return load_config(path, overrides or [])
    except ConfigError as e:
        _fail(str(e))
        raise  # unreachable; keeps type checkers content


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration as commented TOML."""
    cfg = _config(config, set_)
    print(to_toml(cfg))


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TB"


_MAIN_COUNT = {"model": "parameters", "corpus": "passages", "qa": "questions", "seeds": "seeds", "index": "passages"}


def print_asset_summary(cfg: Config) -> None:
    from searchplay.assets import asset_info
    from searchplay.config import searchplay_home

    table = Table(title=f"searchplay assets in {searchplay_home(cfg)}")
    for col in ("asset", "kind", "built", "count", "size", "source", "licence"):
        table.add_column(col)
    for row in asset_info(cfg):
        counts = row.get("counts", {})
        key = _MAIN_COUNT[row["kind"]]
        count = f"{counts[key]:,} {key}" if key in counts else ""
        sources = ", ".join(f"{s['package']} {s['version']}" for s in row.get("sources", []))
        table.add_row(row["name"], row["kind"], "yes" if row["built"] else "[red]no[/]", count,
                      _human(row["size_bytes"]) if row["built"] else "", sources, row.get("licence", "").split(" (")[0])
    console.print(table)


@assets_app.command("build")
def assets_build(
    names: Annotated[Optional[list[str]], typer.Argument(help="assets to build (default: all)")] = None,
    force: Annotated[bool, typer.Option(help="rebuild even when up to date")] = False,
    config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Build the embedded default into $SEARCHPLAY_HOME (skips assets that are up to date)."""
    from searchplay.assets import MissingSourceError, build_assets

    cfg = _config(config, set_)
    try:
        report = build_assets(cfg, names, force=force, log=lambda m: err.print(m, highlight=False))
    except (MissingSourceError, KeyError) as e:
        _fail(str(e).strip('"'))
    err.print(f"assets: {len(report.built)} built, {len(report.skipped)} up to date")


@assets_app.command("info")
def assets_info(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Show each asset: built or not, counts, size, source package, licence."""
    from searchplay.assets import asset_info

    cfg = _config(config, set_)
    if as_json:
        print(json.dumps(asset_info(cfg), indent=2, ensure_ascii=False))
    else:
        print_asset_summary(cfg)


@app.command()
def demo(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """The main job on the embedded default (for now: build the assets and print their summary)."""
    assets_build(None, False, config, set_)
    print_asset_summary(_config(config, set_))


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()
