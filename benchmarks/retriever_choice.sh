#!/usr/bin/env bash
# The agent's end-to-end accuracy with each retriever we ship, on the first 200 nq-answerable
# questions (bundled SmolLM2-135M, the demo config, greedy): how the default retriever was chosen.
# Resumable: an interrupted evaluation continues. Results: docs/retrieval/<kind>/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
for kind in bm25 dense hybrid; do
    out=docs/retrieval/$kind
    if [ -f "$out/summary.json" ]; then continue; fi
    resume=(); [ -f "$out/eval-settings.json" ] && resume=(--resume)
    .venv/bin/searchplay eval --config configs/cpu-smollm2.toml --data nq-answerable --limit 200 \
        --retriever "$kind" --out "$out" "${resume[@]}"
done
.venv/bin/searchplay compare docs/retrieval/bm25 docs/retrieval/dense > docs/retrieval/compare-bm25-dense.md
.venv/bin/searchplay compare docs/retrieval/bm25 docs/retrieval/hybrid > docs/retrieval/compare-bm25-hybrid.md
