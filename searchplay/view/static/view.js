// searchplay run viewer. One page; the data comes from the viewer's JSON API (searchplay view)
// or, in a report (searchplay report), from window.SEARCHPLAY_REPORT with the same answers.
// Text from runs (model output, documents) is only ever set as textContent, never as HTML.
"use strict";

const REPORT = window.SEARCHPLAY_REPORT || null;
const PAGE_SIZE = 50;
const POLL_MS = 5000;
const GROUP_ORDER = ["solver", "proposer", "verify", "pool", "eval", "probe", "solver_update", "proposer_update", "update"];
const SHOWN = new Set([
  "solver/acc", "solver/reward_mean", "proposer/valid_rate", "proposer/reward_mean", "verify/pass_rate",
  "pool/size", "pool/reused", "eval/em", "eval/cover_em", "eval/f1", "eval/judge_acc", "timing/step_s",
  "solver_update/kl", "proposer_update/kl", "update/kl", "solver_update/logprob_gap", "proposer_update/logprob_gap",
  "probe/reward", "probe/em", "proposer/learnable_fraction", "solver/query_diversity", "proposer/query_diversity",
]);
const DIVERSITY_WARNING = 0.25;  // as the trainer's console warning (train/logging.py)
const DASHES = ["solid", "dash", "dot", "dashdot"];  // one per overlaid run
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04", "#db2777", "#65a30d"];

const state = {
  runs: [], version: "", metrics: [], charts: {},
  tables: {
    proposals: { run: 0, step: null, q: "", sort: "", desc: false, offset: 0, follow: true },
    trajectories: { run: 0, step: null, q: "", sort: "", desc: false, offset: 0, follow: true, role: "all" },
    pool: { run: 0, q: "", sort: "step", desc: true, offset: 0, status: "all" },
  },
};

// ---- data -------------------------------------------------------------------------------------

async function api(name, params = {}) {
  if (REPORT) return reportApi(name, params);
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined));
  const response = await fetch(`api/${name}?${query}`);
  let body;
  try { body = await response.json(); } catch (e) { throw new Error(`${name}: HTTP ${response.status}, not JSON`); }
  if (!response.ok) throw new Error(body.error || `${name}: HTTP ${response.status}`);
  return body;
}

// The report's answers to the same requests: filter, sort and slice the embedded rows (query.py's page()).
function reportApi(name, p) {
  const run = Number(p.run || 0);
  if (name === "runs") return REPORT.runs;
  if (name === "metrics") return REPORT.metrics[run];
  if (name === "steps") return REPORT.steps[run];
  if (name === "evals") return REPORT.evals;
  if (name === "compare") {
    const md = REPORT.compare[`${p.a}-${p.b}`];
    if (md === undefined) throw new Error("this report holds comparisons against the first evaluation only");
    return { markdown: md };
  }
  if (name === "pool") {
    const rows = REPORT.pool[run].filter((r) => p.status === "all" || !p.status || r.in_pool === (p.status === "in_pool"));
    return queryRows(rows, p, ["id", "question", "answer"]);
  }
  const step = REPORT.trajectories[run][p.step];
  if (!step) throw new Error(`no trajectories of step ${p.step} in this report`);
  if (name === "trajectories") {
    const rows = step.rows.filter((r) => !p.role || p.role === "all" || r.role === p.role);
    return queryRows(rows, p, ["id", "question", "answer", "final", "rejection"]);
  }
  if (name === "trajectory") {
    const found = p.id !== undefined ? step.details.find((d) => d.id === p.id) : step.details[Number(p.index)];
    if (!found) throw new Error(`trajectory ${p.id ?? p.index} was not among those logged for step ${p.step}`);
    return found;
  }
  throw new Error(`unknown request ${name}`);
}

function queryRows(rows, p, fields) {
  const needle = (p.q || "").trim().toLowerCase();
  let out = needle ? rows.filter((r) => fields.some((f) => String(r[f] ?? "").toLowerCase().includes(needle))) : rows.slice();
  if (p.sort) {
    const key = (r) => (Array.isArray(r[p.sort]) ? r[p.sort].length : r[p.sort]);
    const present = out.filter((r) => r[p.sort] !== null && r[p.sort] !== undefined);
    present.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * (p.desc ? -1 : 1));
    out = present.concat(out.filter((r) => r[p.sort] === null || r[p.sort] === undefined));
  }
  const offset = Number(p.offset || 0);
  return { total: out.length, offset, rows: out.slice(offset, offset + Number(p.limit || PAGE_SIZE)) };
}

// ---- small DOM helpers ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

// Plotly reads trace names and titles as a subset of HTML (links included): metric names are text, so escape them.
function plain(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  return String(v);
}

function showError(message) {
  const box = document.getElementById("error");
  box.hidden = !message;
  box.textContent = message || "";
}

async function guarded(fn) {
  try { await fn(); } catch (e) { showError(e.message); }
}

// ---- header and live refresh -------------------------------------------------------------------

async function loadRuns() {
  state.runs = await api("runs");
  const chips = state.runs.map((r) => el("span", { class: "run-chip" },
    el("b", {}, r.name), r.error ? "" : ` · ${r.model} · ${r.mode} · step ${r.last_step}${r.planned_steps ? " / " + r.planned_steps : ""}`));
  document.getElementById("runs").replaceChildren(...chips);
  const broken = state.runs.filter((r) => r.error);
  const stray = state.runs.filter((r) => r.stray_files).map((r) => `${r.name}: not step files, left unread: ${r.stray_files.join(", ")}`);
  showError([...broken.map((r) => `${r.name}: ${r.error}`), ...stray].join("\n"));
  for (const select of document.querySelectorAll(".run-select")) {
    const keep = select.value || "0";
    select.replaceChildren(...state.runs.map((r, i) => el("option", { value: String(i) }, r.name)));
    select.value = keep;
  }
  return state.runs.map((r) => r.version || r.error || "").join("|");
}

async function poll() {
  const version = await loadRuns();
  if (version === state.version) return;
  state.version = version;
  document.getElementById("live").textContent = `updated ${new Date().toLocaleTimeString()}`;
  await loadCurves();
  await refreshStepSelects();
}

// ---- curves ------------------------------------------------------------------------------------

function groupOf(name) {
  const i = name.indexOf("/");
  return i < 0 ? "other" : name.slice(0, i);
}

function smooth(values, window, name) {
  if (window <= 1 || name.startsWith("eval/")) return values;
  const out = [];
  const kept = [];
  for (const v of values) {
    if (v === null) { out.push(null); continue; }
    kept.push(v);
    if (kept.length > window) kept.shift();
    out.push(kept.reduce((a, b) => a + b, 0) / kept.length);
  }
  return out;
}

async function loadCurves() {
  const live = state.runs.map((r, i) => [r, i]).filter(([r]) => !r.error);
  state.metrics = await Promise.all(live.map(async ([r, i]) => ({ name: r.name, columns: await api("metrics", { run: i }) })));
  drawCurves();
}

function collapseWarnings() {
  // a role whose search queries collapsed to a few prefixes (the trainer prints the same warning)
  const lines = [];
  for (const m of state.metrics) for (const role of ["solver", "proposer"]) {
    const series = m.columns.series[`${role}/query_diversity`] || [];
    const counts = m.columns.series[`${role}/queries`] || [];
    const at = series.map((v, i) => (v === null ? -1 : i)).filter((i) => i >= 0).pop();
    const last = at === undefined ? undefined : series[at];
    if (last !== undefined && (counts[at] ?? 8) >= 8 && last < DIVERSITY_WARNING) {
      lines.push(`${m.name}: ${role} search queries collapsed (query diversity ${last.toFixed(2)} at the last step)`);
    }
  }
  const box = document.getElementById("warnings");
  box.replaceChildren(...lines.map((t) => el("p", {}, t)));
  box.hidden = !lines.length;
}

function drawCurves() {
  collapseWarnings();
  const window = Math.max(1, Number(document.getElementById("smooth").value) || 1);
  const lo = document.getElementById("step-from").value;
  const hi = document.getElementById("step-to").value;
  const groups = new Map();
  for (const m of state.metrics) for (const name of Object.keys(m.columns.series)) {
    const g = groupOf(name);
    if (!groups.has(g)) groups.set(g, []);
    if (!groups.get(g).includes(name)) groups.get(g).push(name);
  }
  const rank = (g) => (GROUP_ORDER.includes(g) ? GROUP_ORDER.indexOf(g) : g === "timing" ? 99 : 50);
  const ordered = [...groups.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const container = document.getElementById("charts");
  if (!ordered.length) container.replaceChildren(el("p", { class: "muted" }, "no metrics logged yet"));
  for (const g of ordered) {
    const names = groups.get(g);
    const shown = names.some((n) => SHOWN.has(n)) ? new Set(names.filter((n) => SHOWN.has(n))) : new Set(names.slice(0, 2));
    const traces = [];
    state.metrics.forEach((m, r) => names.forEach((n, k) => {
      const y = m.columns.series[n];
      if (!y) return;
      const color = PALETTE[k % PALETTE.length];
      traces.push({
        x: m.columns.steps, y: smooth(y, window, n), type: "scatter", mode: m.columns.steps.length < 40 ? "lines+markers" : "lines",
        name: plain(state.metrics.length > 1 ? `${m.name}: ${n}` : n), connectgaps: true, visible: shown.has(n) ? true : "legendonly",
        line: { dash: DASHES[r % DASHES.length], color }, marker: { size: 4, color }, legendgroup: n,
      });
    }));
    let div = state.charts[g];
    if (!div) {
      div = el("div", { class: "chart", "data-group": g });
      state.charts[g] = div;
      container.append(div);
    }
    const layout = {
      title: { text: plain(g), font: { size: 14 } }, height: 320, margin: { l: 50, r: 10, t: 36, b: 30 },
      xaxis: { tickformat: "d", range: lo !== "" || hi !== "" ? [lo === "" ? null : Number(lo), hi === "" ? null : Number(hi)] : undefined, autorange: lo === "" && hi === "" },
      legend: { font: { size: 10 } }, uirevision: g,
    };
    Plotly.react(div, traces, layout, { displaylogo: false, responsive: true });
  }
}

// ---- tables ------------------------------------------------------------------------------------

async function refreshStepSelects() {
  for (const table of ["proposals", "trajectories"]) {
    const t = state.tables[table];
    const steps = (await api("steps", { run: t.run })).map((s) => s.step).reverse();
    const select = document.querySelector(`.step-select[data-table=${table}]`);
    select.replaceChildren(...steps.map((s) => el("option", { value: String(s) }, `step ${s}`)));
    if (t.step === null || t.follow || !steps.includes(t.step)) t.step = steps.length ? steps[0] : null;
    if (t.step !== null) select.value = String(t.step);
    await loadTable(table);
  }
}

function pager(table, page) {
  const t = state.tables[table];
  const box = document.querySelector(`.pager[data-table=${table}]`);
  const last = Math.min(page.offset + PAGE_SIZE, page.total);
  box.replaceChildren(
    el("span", {}, page.total ? `rows ${page.offset + 1}–${last} of ${page.total}` : "no rows"),
    el("button", { onclick: () => { t.offset = Math.max(0, t.offset - PAGE_SIZE); guarded(() => loadTable(table)); }, ...(t.offset ? {} : { disabled: "" }) }, "previous"),
    el("button", { onclick: () => { t.offset += PAGE_SIZE; guarded(() => loadTable(table)); }, ...(last < page.total ? {} : { disabled: "" }) }, "next"),
  );
}

const COLUMNS = {
  proposals: [
    ["id", (r) => r.id],
    ["seed answer", (r) => `${r.answer ?? ""} (${r.hops ?? "?"} hop${r.hops === 1 ? "" : "s"})`],
    ["searches", (r) => r.searches.join(" · ")],
    ["retrieved titles", (r) => r.titles.slice(0, 5).join(" · ") + (r.titles.length > 5 ? " …" : "")],
    ["question", (r) => r.question || "–"],
    ["filter", (r) => (r.rejection ? el("span", { class: "reason" }, r.rejection) : el("span", { class: "ok" }, "passed"))],
    ["verification", (r) => (r.verdict ? el("span", { class: r.passed ? "ok" : "reason" }, `${r.verdict}${r.verifier_answer ? ` (“${r.verifier_answer}”)` : ""}`) : "–")],
    ["reward", (r) => fmt(r.reward), "num"],
  ],
  trajectories: [
    ["id", (r) => r.id],
    ["role", (r) => r.role],
    ["question", (r) => r.question || "–"],
    ["answer", (r) => r.answer ?? ""],
    ["final", (r) => r.final ?? "–"],
    ["reward", (r) => fmt(r.reward), "num"],
    ["advantage", (r) => fmt(r.advantage), "num"],
    ["stop", (r) => r.stop_reason ?? ""],
    ["searches", (r) => r.searches.length, "num"],
  ],
  pool: [
    ["id", (r) => r.id],
    ["question", (r) => r.question],
    ["answer", (r) => r.answer],
    ["hops", (r) => r.hops, "num"],
    ["provenance", (r) => el("a", { class: "link", onclick: (e) => { e.stopPropagation(); guarded(() => openProvenance(r)); } }, `step ${r.step} · ${r.proposer_trajectory}`)],
    ["success rate", (r) => fmt(r.success_rate, 2), "num"],
    ["reused", (r) => r.reused, "num"],
    ["verdict", (r) => r.verdict],
    ["in pool", (r) => (r.in_pool ? "yes" : `cleared at step ${r.cleared_step}`)],
  ],
};

async function loadTable(table) {
  const t = state.tables[table];
  const params = { run: t.run, q: t.q, sort: t.sort, desc: t.desc ? 1 : 0, offset: t.offset, limit: PAGE_SIZE };
  let page;
  if (table === "pool") page = await api("pool", { ...params, status: t.status });
  else if (t.step === null) page = { total: 0, offset: 0, rows: [] };
  else page = await api("trajectories", { ...params, step: t.step, role: table === "proposals" ? "proposer" : t.role });
  const columns = COLUMNS[table];
  const head = el("tr", {}, columns.map(([name]) => el("th", {}, name)));
  const rows = page.rows.map((r) => {
    const tr = el("tr", { class: table === "pool" ? "" : "clickable", "data-id": r.id }, columns.map(([, cell, cls]) => el("td", cls ? { class: cls } : {}, cell(r))));
    if (table !== "pool") tr.addEventListener("click", () => guarded(() => openTrajectory(table, t.run, t.step, { index: r.index }, tr)));
    return tr;
  });
  document.getElementById(`${table}-table`).replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
  pager(table, page);
}

async function openProvenance(row) {
  const t = state.tables.trajectories;
  Object.assign(t, { run: state.tables.pool.run, step: row.step, follow: false, offset: 0, q: "", role: "all" });
  document.querySelector(".run-select[data-table=trajectories]").value = String(t.run);
  document.querySelector(".text-filter[data-table=trajectories]").value = "";
  document.getElementById("role-select").value = "all";
  switchTab("trajectories");
  await refreshStepSelects();
  await openTrajectory("trajectories", t.run, row.step, { id: row.proposer_trajectory }, null);
}

async function openTrajectory(table, run, step, which, tr) {
  for (const row of document.querySelectorAll(`#${table}-table tr.selected`)) row.classList.remove("selected");
  if (tr) tr.classList.add("selected");
  const d = await api("trajectory", { run, step, ...which });
  const box = document.getElementById(`${table}-detail`);
  box.replaceChildren(renderTrajectory(d));
  box.scrollIntoView({ behavior: "smooth", block: "start" });
}

function doc(d, noisy) {
  const label = `${d.title || "(title not logged)"} — ${d.id}`;
  const text = d.text ?? "(text not logged: it was retrieved by a proposer trajectory that this step did not write)";
  return el("details", { class: noisy ? "doc noisy" : "doc" }, el("summary", {}, label), el("div", { class: "doc-text" }, text));
}

function renderTrajectory(d) {
  const facts = [
    ["role", d.role], ["question", d.question || "–"], [d.role === "proposer" ? "seed answer" : "golden answers", d.answer ?? "–"],
    ["final", d.final ?? "–"], ["reward", fmt(d.reward)],
    ["advantage", d.advantage === null || d.advantage === undefined ? "not trained (warm-up, excluded, or a group without signal)" : fmt(d.advantage)],
    ["stop reason", d.stop_reason], ["trained tokens", d.tokens],
  ];
  if (d.role === "proposer") facts.push(["filter", d.rejection || "passed"]);
  if (d.source) facts.push(["question source", d.source]);
  if (d.excluded) facts.push(["excluded", "yes: an infrastructure failure, not trained on"]);
  const parts = [
    el("div", { class: "card" }, el("h3", {}, `${d.id} · step ${d.step}`), el("dl", { class: "kv" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))),
  ];
  if (d.evidence) {
    parts.push(el("div", { class: "card verification" },
      el("h3", {}, "Verification input"),
      el("p", {}, `verdict: ${d.verdict} · verifier answer: ${d.verifier_answer ?? "none"} · ${d.passed ? "passed" : "failed"}`),
      el("p", { class: "muted" }, d.noisy.length
        ? "the verifier read this proposer's documents and the noisy ones (retrieved by other proposers), shuffled by block"
        : "documents of this proposer's own retrieval that the verifier relied on; no noisy documents were mixed in"),
      d.evidence.map((x) => doc(x, false)), d.noisy.map((x) => doc(x, true))));
  }
  const segments = d.segments.map(([text, trained]) => el("span", { class: trained === null ? "seg-unknown" : trained ? "seg-trained" : "seg-masked" }, text));
  parts.push(el("div", { class: "card" },
    el("h3", {}, "Response"),
    d.mask_known
      ? el("p", { class: "legend" }, el("span", { class: "seg-trained" }, "sampled by the model, trained"), el("span", { class: "seg-masked" }, "inserted or retrieved, masked from the loss"))
      : el("p", { class: "muted" }, "this run logged no token mask (written before response_segments existed)"),
    el("pre", { class: "response" }, segments)));
  const turns = d.turns.map((t, i) => el("tr", {},
    el("td", { class: "num" }, i + 1), el("td", {}, t.action), el("td", {}, t.content || ""), el("td", {}, t.finish_reason || ""),
    el("td", {}, t.error ? el("span", { class: "reason" }, t.error) : "", (t.hits || []).map((h) => doc(h, false)))));
  parts.push(el("div", { class: "card" }, el("h3", {}, "Turns"),
    el("table", { class: "rows turns" }, el("thead", {}, el("tr", {}, ["#", "action", "query / answer", "finish", "documents"].map((h) => el("th", {}, h)))), el("tbody", {}, turns))));
  if (d.prompt_text) parts.push(el("details", { class: "card" }, el("summary", {}, "Prompt"), el("pre", {}, d.prompt_text)));
  return el("div", {}, parts);
}

// ---- evaluations -------------------------------------------------------------------------------

async function loadEvals() {
  const evals = await api("evals");
  const box = document.getElementById("evals");
  if (!evals.length) {
    box.replaceChildren(el("p", { class: "muted" }, "no evaluations given; pass eval directories with --eval DIR (periodic evaluations are in the curves, group eval)"));
    return;
  }
  const metrics = ["n", "em", "cover_em", "f1", "judge_acc", "answer_rate", "searches_mean", "search_recall", "question_recall"];
  const cell = (r, m) => (r[m] === undefined ? "–" : r[`${m}_ci`] ? `${fmt(r[m])} [${fmt(r[`${m}_ci`][0])}, ${fmt(r[`${m}_ci`][1])}]` : fmt(r[m]));
  const parts = evals.map((e) => e.error ? el("div", { class: "card reason" }, `${e.name}: ${e.error}`) : el("div", { class: "card" },
    el("h3", {}, e.name, el("span", { class: "muted" }, ` ${e.path} · model ${e.summary.model ?? "?"} · retriever ${e.summary.retriever ?? "?"}`)),
    el("table", { class: "rows eval-summary" },
      el("thead", {}, el("tr", {}, el("th", {}, "dataset"), metrics.map((m) => el("th", {}, m)))),
      el("tbody", {}, Object.entries(e.summary.datasets || {}).map(([name, r]) => el("tr", {}, el("td", {}, name), metrics.map((m) => el("td", { class: "num" }, cell(r, m)))))))));
  for (let b = 1; b < evals.length; b++) {
    if (evals[0].error || evals[b].error) continue;  // shown above, alone
    try {
      const { markdown } = await api("compare", { a: 0, b });
      parts.push(el("div", { class: "card" }, el("h3", {}, `${evals[b].name} vs ${evals[0].name}`), el("pre", { class: "compare" }, markdown)));
    } catch (e) {
      parts.push(el("div", { class: "card reason" }, `${evals[b].name} vs ${evals[0].name}: ${e.message}`));
    }
  }
  box.replaceChildren(...parts);
}

// ---- wiring ------------------------------------------------------------------------------------

function switchTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== `tab-${name}`;
  if (name === "curves") for (const div of Object.values(state.charts)) Plotly.Plots.resize(div);
}

function wire() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => switchTab(b.dataset.tab));
  for (const id of ["smooth", "step-from", "step-to"]) document.getElementById(id).addEventListener("input", () => guarded(drawCurves));
  const reload = (table, change) => (e) => { Object.assign(state.tables[table], change(e.target), { offset: 0 }); guarded(() => loadTable(table)); };
  for (const s of document.querySelectorAll(".step-select")) s.addEventListener("change", reload(s.dataset.table, (x) => ({ step: Number(x.value), follow: x.selectedIndex === 0 })));
  for (const s of document.querySelectorAll(".run-select")) s.addEventListener("change", (e) => {
    Object.assign(state.tables[s.dataset.table], { run: Number(e.target.value), offset: 0, step: null });
    guarded(s.dataset.table === "pool" ? () => loadTable("pool") : refreshStepSelects);
  });
  for (const s of document.querySelectorAll(".text-filter")) s.addEventListener("input", reload(s.dataset.table, (x) => ({ q: x.value })));
  for (const s of document.querySelectorAll(".sort-select")) s.addEventListener("change", reload(s.dataset.table, (x) => ({ sort: x.value })));
  for (const s of document.querySelectorAll(".desc-check")) s.addEventListener("change", reload(s.dataset.table, (x) => ({ desc: x.checked })));
  document.getElementById("role-select").addEventListener("change", reload("trajectories", (x) => ({ role: x.value })));
  document.getElementById("pool-status").addEventListener("change", reload("pool", (x) => ({ status: x.value })));
}

async function main() {
  wire();
  await guarded(async () => {
    state.version = await loadRuns();
    await loadCurves();
    await refreshStepSelects();
    await loadTable("pool");
    await loadEvals();
  });
  document.body.dataset.ready = "1";
  if (REPORT) document.getElementById("live").textContent = `report written ${REPORT.written}`;
  else setInterval(() => { if (!document.hidden) guarded(poll); }, POLL_MS);
}

main();
