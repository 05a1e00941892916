"""What the run viewer reads from a run directory, read-only, while the trainer may still be writing.

Every file is parsed again only when its size or modification time changed, so a page that
polls a live run costs a `stat` per file, and requests that arrive while a file is being parsed
wait for that one parse instead of starting their own. A torn last line (a write in progress:
the start of a JSON object) is skipped; a damaged line anywhere else, or a line of the wrong
shape, is an error naming the file and line. Step files are parsed into short rows (what a table
shows) and byte offsets; a trajectory's full record is read on demand. Files are read only where
they resolve inside their run folder (a symlink out of it is refused).
"""

from __future__ import annotations

import json
import math
import re
import threading
import tomllib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from searchplay.game.pool import PoolError, QuestionPool
from searchplay.jsonl import GZ, read_record_bytes, stored
from searchplay.train.run_dir import RunDir
from searchplay.view.query import Page, page

T = TypeVar("T")
STEP_CACHE = 8  # parsed step files kept in memory per run
STEP_FILE = re.compile(r"step-(\d+)\.jsonl(?:\.gz)?")  # gzipped: a committed study record
TRAJECTORY_SORTS = ("index", "reward", "advantage", "searches", "tokens")
POOL_SORTS = ("step", "success_rate", "reused", "hops", "question", "answer")


class RunViewError(ValueError):
    """A run directory, file or request the viewer cannot serve; the message names it. `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


class _Cache:
    """Parsed files keyed by (size, mtime): a file is parsed again only after it changed, and once for all the
    requests that want it meanwhile (the viewer serves requests in threads)."""

    def __init__(self, capacity: int):
        self.capacity, self.items = capacity, OrderedDict[Path, tuple[tuple[int, int], Any]]()
        self.lock = threading.Lock()
        self.parsing: dict[Path, threading.Lock] = {}

    def get(self, path: Path, parse: Callable[[Path], T]) -> T:
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        with self.lock:
            hit = self.items.get(path)
            if hit is not None and hit[0] == key:
                self.items.move_to_end(path)
                return hit[1]
            one_parse = self.parsing.setdefault(path, threading.Lock())
        with one_parse:  # a second request for the same file waits here, then finds the first one's result
            with self.lock:
                hit = self.items.get(path)
                if hit is not None and hit[0] == key:
                    return hit[1]
            try:
                value = parse(path)
            finally:
                with self.lock:
                    self.parsing.pop(path, None)
            with self.lock:
                self.items[path] = (key, value)
                while len(self.items) > self.capacity:
                    self.items.popitem(last=False)
        return value


def inside(root: Path, path: Path) -> Path:
    """`path` when it resolves inside `root` (a run or evaluation folder); a symlink that leads out is refused."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise RunViewError(f"{path} leads out of {root} (a link); the viewer reads only files inside the folder", 403)
    return path


def read_lines(path: Path) -> list[tuple[int, Any]]:
    return parse_lines(read_record_bytes(path), path)


def parse_lines(data: bytes, path: Path) -> list[tuple[int, Any]]:
    """(byte offset, record) per non-empty line of `data`, the records of `path`. A last line without its newline
    that starts a JSON object is a write in progress and is dropped; any other damaged line (a file of NUL bytes
    included) raises."""
    out, offset = [], 0
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines, 1):
        if raw.strip():
            try:
                out.append((offset, _loads(raw)))
            except ValueError as e:
                torn = lineno == len(lines) and raw.lstrip().startswith(b"{") and b"\0" not in raw
                if not torn:
                    raise RunViewError(f"{path}, line {lineno}: not a JSON record ({e})", 500) from None
        offset += len(raw) + 1
    return out


def _loads(raw: bytes) -> Any:
    """orjson, and where it refuses, Python's json, which also reads the NaN and Infinity that a diverging
    run's metrics hold (Python writes them so); they are shown as gaps (`_is_number`), never a 500."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def trajectory_row(index: int, r: dict[str, Any]) -> dict[str, Any]:
    """The table row of one trajectory record: what was asked, what came of it, and how it was scored."""
    meta, turns = r.get("meta", {}), r.get("turns", [])
    role = meta.get("role", "")
    verification = meta.get("verification") or {}
    golden = meta.get("golden") or []
    return {
        "index": index,
        "id": meta.get("id", str(index)),
        "role": role,
        "question": meta.get("question") or "",
        "answer": meta.get("answer") if role == "proposer" else " | ".join(golden),
        "hops": meta.get("hops"),
        "final": r.get("final"),
        "reward": meta.get("reward"),
        "advantage": meta.get("advantage"),
        "excluded": bool(meta.get("excluded")) or r.get("search_errors", 0) > 0,
        "stop_reason": r.get("stop_reason"),
        "searches": [t["content"] for t in turns if t.get("action") == "search"],
        "titles": list(dict.fromkeys(h.get("title", "") for t in turns for h in t.get("hits", []))),
        "rejection": meta.get("rejection"),
        "verdict": verification.get("verdict"),
        "verifier_answer": verification.get("answer"),
        "passed": verification.get("passed"),
        "source": meta.get("source"),
        "tokens": sum(r.get("loss_mask", [])),
    }


def trajectory_problem(r: Any) -> str | None:
    """What makes a parsed line not a trajectory record the viewer can show, or None."""
    if not isinstance(r, dict):
        return f"a JSON {type(r).__name__}, not an object"
    if not isinstance(r.get("meta", {}), dict):
        return "'meta' is not an object"
    turns = r.get("turns", [])
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        return "'turns' is not a list of objects"
    if not all(isinstance(t.get("hits", []), list) and all(isinstance(h, dict) for h in t.get("hits", [])) for t in turns):
        return "a turn's 'hits' is not a list of objects"
    if not isinstance(r.get("loss_mask", []), list):
        return "'loss_mask' is not a list"
    return None


class StepFile:
    """One parsed `trajectories/step-N.jsonl` (or `.jsonl.gz`): rows, byte offsets, and every retrieved document by
    id. A plain file's records are read again by offset when shown; a gzipped one's text is kept (a few MiB)."""

    def __init__(self, path: Path):
        self.path = path
        data = read_record_bytes(path)  # decompressed once, a gzipped file's kept
        self.text = data if path.name.endswith(GZ) else None
        records = parse_lines(data, path)
        for o, r in records:
            if (problem := trajectory_problem(r)) is not None:
                line = data[:o].count(b"\n") + 1
                raise RunViewError(f"{path}, line {line}: not a trajectory record ({problem})", 500)
        self.offsets = [o for o, _ in records]
        try:
            self.rows = [trajectory_row(i, r) for i, (_, r) in enumerate(records)]
        except (TypeError, AttributeError, KeyError) as e:
            raise RunViewError(f"{path}: a trajectory record of the wrong shape ({type(e).__name__}: {e})", 500) from None
        self.docs = {h["id"]: h for _, r in records for t in r.get("turns", []) for h in t.get("hits", []) if "id" in h}

    def record(self, index: int) -> dict[str, Any]:
        if self.text is not None:
            end = self.text.find(b"\n", self.offsets[index])
            return orjson.loads(self.text[self.offsets[index] : None if end < 0 else end])
        with open(self.path, "rb") as f:
            f.seek(self.offsets[index])
            return orjson.loads(f.readline())


def _segments(r: dict[str, Any]) -> tuple[list[list[Any]], bool]:
    """The response as [text, trained] runs; runs written before segments were logged have one unmarked run."""
    if "response_segments" in r:
        return [list(s) for s in r["response_segments"]], True
    text = r.get("response_text") or "".join(t.get("text", "") for t in r.get("turns", []))
    return [[text, None]], False


def open_runs(run_dirs: list[Path]) -> list[RunData]:
    """The runs of one page, named by folder (numbered where two folders share a name)."""
    names = [Path(p).name for p in run_dirs]
    return [RunData(p, f"{n} ({i + 1})" if names.count(n) > 1 else n) for i, (p, n) in enumerate(zip(run_dirs, names))]


class RunData:
    """One run directory as the viewer sees it."""

    def __init__(self, root: Path, name: str | None = None):
        self.run, self.name = RunDir(Path(root)), name or Path(root).name
        self._cache = _Cache(STEP_CACHE + 4)

    def _check(self) -> None:
        if not self.run.root.is_dir():
            raise RunViewError(f"{self.run.root} does not exist or is not a directory")
        if not self.run.config.is_file() and not self.run.metrics.is_file():
            raise RunViewError(
                f"{self.run.root} is not a searchplay run directory (no config.toml, no metrics.jsonl); "
                "a run that is starting writes them once its model and retriever have loaded"
            )

    def summary(self) -> dict[str, Any]:
        """Name, configuration essentials and progress; `error` instead when the directory cannot be read."""
        out: dict[str, Any] = {"name": self.name, "path": str(self.run.root)}
        try:
            self._check()
            cfg = tomllib.loads(inside(self.run.root, self.run.config).read_text()) if self.run.config.is_file() else {}
            metrics = self.metrics()
        except (RunViewError, tomllib.TOMLDecodeError, OSError) as e:
            return {**out, "error": str(e)}
        steps = metrics["steps"]
        out.update(
            model=cfg.get("model", {}).get("path", ""),
            mode=cfg.get("game", {}).get("mode", ""),
            planned_steps=cfg.get("trainer", {}).get("steps"),
            last_step=steps[-1] if steps else 0,
            trajectory_steps=len(self.step_paths()),
            version=self._version(),
        )
        if stray := self.stray_files():
            out["stray_files"] = stray
        return out

    def _version(self) -> str:
        """Changes whenever the metrics, the pool or the set of step files change (the page polls it)."""
        parts = []
        for p in (self.run.metrics, self.run.pool):
            st = p.stat() if p.exists() else None
            parts.append(f"{st.st_size}:{st.st_mtime_ns}" if st else "-")
        paths = self.step_paths()
        parts.append(f"{len(paths)}:{paths[-1].stat().st_mtime_ns if paths else 0}")
        return "/".join(parts)

    def metrics(self) -> dict[str, Any]:
        """Columns: `steps` and one list per series (None where a step did not log it), in first-seen order."""
        self._check()
        if not self.run.metrics.is_file():
            return {"steps": [], "series": {}}
        return self._cache.get(inside(self.run.root, self.run.metrics), _metric_columns)

    def step_paths(self) -> list[Path]:
        """The trainer's step files (`step-000012.jsonl`, or gzipped), in step order; anything else there is `stray_files`."""
        if not self.run.trajectories.is_dir():
            return []
        found = {}
        for p in sorted(self.run.trajectories.glob("step-*.jsonl*"), key=lambda p: p.name, reverse=True):
            if m := STEP_FILE.fullmatch(p.name):
                found[int(m[1])] = p  # the plain file, where both a step's file and its gzipped copy exist
        return [found[step] for step in sorted(found)]

    def stray_files(self) -> list[str]:
        """Names in trajectories/ that look like step files but are not the trainer's (shown, never read)."""
        if not self.run.trajectories.is_dir():
            return []
        return sorted(p.name for p in self.run.trajectories.glob("step-*") if not STEP_FILE.fullmatch(p.name))

    def steps(self) -> list[dict[str, int]]:
        self._check()
        return [{"step": int(STEP_FILE.fullmatch(p.name)[1]), "bytes": p.stat().st_size} for p in self.step_paths()]  # type: ignore[index]

    def step_file(self, step: int) -> StepFile:
        self._check()
        path = stored(self.run.trajectories / f"step-{step:06d}.jsonl")
        if not path.is_file():
            raise RunViewError(f"{self.name}: no trajectories logged for step {step} ({path} does not exist)")
        return self._cache.get(inside(self.run.root, path), StepFile)

    def trajectories(self, step: int, role: str, text: str, sort: str, desc: bool, offset: int, limit: int) -> Page:
        rows = [r for r in self.step_file(step).rows if role in ("", "all") or r["role"] == role]
        return page(rows, text, ("id", "question", "answer", "final", "rejection"), sort, TRAJECTORY_SORTS, desc, offset, limit)

    def trajectory(self, step: int, index: int | None = None, trajectory_id: str | None = None) -> dict[str, Any]:
        """One trajectory in full: its row, prompt, response runs, turns and the verifier's input documents."""
        sf = self.step_file(step)
        if trajectory_id is not None:
            found = [r["index"] for r in sf.rows if r["id"] == trajectory_id]
            if not found:
                raise RunViewError(f"{self.name}: trajectory {trajectory_id} was not among those logged for step {step}")
            index = found[0]
        if index is None or not 0 <= index < len(sf.rows):
            raise RunViewError(f"{self.name}: step {step} has {len(sf.rows)} logged trajectories; index {index} is out of range")
        r = sf.record(index)
        segments, masked = _segments(r)
        out = {
            **sf.rows[index],
            "step": step,
            "prompt_text": r.get("prompt_text"),
            "segments": segments,
            "mask_known": masked,
            "turns": [{k: t.get(k) for k in ("text", "action", "content", "hits", "error", "finish_reason")} for t in r["turns"]],
            "meta": r.get("meta", {}),
        }
        v = r.get("meta", {}).get("verification")
        if v:
            own = {h["id"]: h for t in r["turns"] for h in t.get("hits", [])}
            titles = dict(zip(v.get("noisy_ids", []), v.get("noisy_titles", [])))
            out["evidence"] = [own.get(d, {"id": d}) for d in v.get("evidence_ids", [])]
            out["noisy"] = [sf.docs.get(d, {"id": d, "title": titles.get(d, "")}) for d in v.get("noisy_ids", [])]
        return out

    def pool_rows(self) -> list[dict[str, Any]]:
        self._check()
        return self._cache.get(inside(self.run.root, self.run.pool), _pool_rows) if self.run.pool.is_file() else []

    def pool(self, text: str, status: str, sort: str, desc: bool, offset: int, limit: int) -> Page:
        rows = self.pool_rows()
        if status not in ("", "all", "in_pool", "cleared"):
            raise RunViewError(f"status {status!r}: use all, in_pool or cleared", 422)
        if status in ("in_pool", "cleared"):
            rows = [r for r in rows if r["in_pool"] == (status == "in_pool")]
        return page(rows, text, ("id", "question", "answer"), sort, POOL_SORTS, desc, offset, limit)


def _metric_columns(path: Path) -> dict[str, Any]:
    records = [r for _, r in read_lines(path) if isinstance(r, dict) and "step" in r]
    names = list(dict.fromkeys(k for r in records for k, v in r.items() if k not in ("step", "time") and _is_number(v)))
    return {
        "steps": [r["step"] for r in records],
        "series": {k: [r[k] if _is_number(r.get(k)) else None for r in records] for k in names},
    }


def _is_number(v: Any) -> bool:
    """A finite number: NaN and infinities become gaps in the curves (JSON cannot carry them to the page)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pool_rows(path: Path) -> list[dict[str, Any]]:
    """Every question ever verified into the pool, the ones maintenance dropped included (`in_pool` false)."""
    try:
        pool = QuestionPool(path, read_only=True)
    except (PoolError, TypeError, KeyError) as e:
        raise RunViewError(f"{path}: cannot replay the pool log ({e})", 500) from None
    current = [(q, None) for q in pool.questions.values()]
    return [
        {
            "id": q.id,
            "question": q.question,
            "answer": q.answer,
            "aliases": q.aliases,
            "hops": q.hops,
            "step": q.step,
            "proposer_trajectory": q.proposer_trajectory,
            "success_rate": q.success_rate,
            "attempts": q.attempts,
            "reused": q.attempts - 1,
            "verdict": q.verdict,
            "verifier_answer": q.verifier_answer,
            "in_pool": cleared_at is None,
            "cleared_step": cleared_at,
        }
        for q, cleared_at in [*pool.cleared.values(), *current]
    ]
