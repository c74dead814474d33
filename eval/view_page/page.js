"use strict";
// The report page. Every text from the run is untrusted: it reaches the DOM only as text nodes (el(), append,
// textContent), never as markup. The data blob is parsed once; lists draw only the rows in view.
(function () {
  const startMs = performance.now();
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const parsedMs = performance.now();
  const S = DATA.strings;
  const F = {};
  DATA.row_fields.forEach((name, i) => { F[name] = i; });
  const J = {}; // the fields of each of a row's judgments (one per judge call of its slot)
  DATA.judgment_fields.forEach((name, i) => { J[name] = i; });
  const judgeOutputs = (row) => row[F.judgments].map((j) => j[J.output]);
  const ITEM = { task: 0, id: 1, category: 2, turns: 3, refs: 4 };
  const runs = DATA.runs;
  const items = DATA.items;
  const ROW_HEIGHT = 28;
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ helpers

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child == null || child === false) continue;
      node.append(typeof child === "object" ? child : String(child));
    }
    return node;
  }
  const str = (i) => (i == null ? null : S[i]);
  // Numbers as Python's format(x, ".2f") writes them in table.md: the exact binary value, ties to even
  // (toFixed alone rounds 3.625 up to 3.63 where the table says 3.62).
  function fmt(x, digits = 2) {
    if (x == null || !Number.isFinite(x)) return "–";
    const [whole, fraction] = Math.abs(x).toFixed(20).split(".");
    const rest = fraction.slice(digits);
    const half = "5" + "0".repeat(rest.length - 1);
    let n = BigInt(whole + fraction.slice(0, digits));
    if (rest > half || (rest === half && n % 2n === 1n)) n += 1n;
    const text = n.toString().padStart(digits + 1, "0");
    const sign = x < 0 || Object.is(x, -0) ? "-" : "";
    return sign + (digits ? text.slice(0, -digits) + "." + text.slice(-digits) : text);
  }
  const signed = (x) => (x == null ? "–" : (x < 0 || Object.is(x, -0) ? "" : "+") + fmt(x));
  const pre = (text, cls) => el("pre", { class: cls }, text == null ? "" : text);
  const GOOD = new Set(DATA.statuses.valid);
  const BAD = new Set(DATA.statuses.failed);
  const statusClass = (s) => (GOOD.has(s) ? "st-ok" : BAD.has(s) ? "st-bad" : "st-warn");
  const enc = encodeURIComponent;
  function option(select, value, label) { select.append(el("option", { value }, label)); }
  function fillSelect(select, entries, keep) {
    const previous = select.value;
    select.replaceChildren();
    for (const [value, label] of entries) option(select, value, label);
    if (keep && [...select.options].some((o) => o.value === previous)) select.value = previous;
  }

  // ------------------------------------------------------------ derived data (once)

  const entries = []; // one per row of every run: what filters and sorts read
  runs.forEach((run, r) => {
    run.index = new Map();
    const groups = new Map();
    run.rows.forEach((row) => {
      const key = row[F.item] + "|" + row[F.turn];
      run.index.set(key + "|" + row[F.round], row);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(row[F.score]);
    });
    run.spread = new Map();
    run.mean = new Map();
    for (const [key, scores] of groups) {
      const valid = scores.filter((s) => s != null);
      run.spread.set(key, valid.length ? Math.max(...valid) - Math.min(...valid) : null);
      run.mean.set(key, valid.length ? valid.reduce((a, b) => a + b, 0) / valid.length : null);
    }
    run.rows.forEach((row) => {
      entries.push({ run: r, row, item: items[row[F.item]], order: entries.length,
                     spread: run.spread.get(row[F.item] + "|" + row[F.turn]) });
    });
  });
  const rounds = [...new Set(entries.map((e) => e.row[F.round]))].sort((a, b) => a - b);
  const taskNames = [...new Set(items.map((i) => i[ITEM.task]))];
  const taskColumn = (task) => {
    for (const run of runs) if (run.summary.tasks && run.summary.tasks[task]) return run.summary.tasks[task].column || task;
    return task;
  };

  // Text search: NFKC + lower case (full-width and half-width forms match), per distinct string, cached.
  const normalized = new Array(S.length);
  function norm(i) {
    let text = normalized[i];
    if (text === undefined) {
      text = S[i].normalize("NFKC").toLowerCase();
      normalized[i] = text === S[i] ? S[i] : text; // most texts are already normal: keep one copy
    }
    return text;
  }
  // The searchable texts are normalized in small slices while the page sits idle, so a first search does not pay.
  function warmSearch(position = 0) {
    const until = performance.now() + 12;
    while (position < entries.length && performance.now() < until) {
      const { row, item } = entries[position++];
      for (const i of [item[ITEM.turns][row[F.turn] - 1], row[F.final], ...judgeOutputs(row)]) if (i != null) norm(i);
    }
    if (position < entries.length) setTimeout(() => warmSearch(position), 4);
    else window.__view.searchWarmMs = performance.now();
  }
  let searchQuery = "";
  let searchHits = new Int8Array(S.length);
  function textMatches(i) {
    if (i == null) return false;
    let hit = searchHits[i];
    if (hit === 0) { hit = norm(i).includes(searchQuery) ? 1 : 2; searchHits[i] = hit; }
    return hit === 1;
  }
  function setQuery(text) {
    const q = text.trim().normalize("NFKC").toLowerCase();
    if (q !== searchQuery) { searchQuery = q; searchHits = new Int8Array(S.length); }
    return q;
  }
  const idMatches = (item) => item[ITEM.id].toLowerCase().includes(searchQuery) ||
    (item[ITEM.category] || "").toLowerCase().includes(searchQuery);

  // ------------------------------------------------------------ virtual list: only rows in view exist

  class VirtualList {
    constructor(box, render, emptyText) {
      this.box = box;
      this.render = render;
      this.emptyText = emptyText;
      this.rows = [];
      this.nodes = [];
      this.spacer = el("div");
      box.append(this.spacer);
      box.addEventListener("scroll", () => this.draw());
      window.addEventListener("resize", () => this.draw());
    }
    set(rows) {
      this.rows = rows;
      this.spacer.style.height = rows.length * ROW_HEIGHT + "px";
      this.box.scrollTop = 0;
      this.draw();
    }
    draw() {
      for (const node of this.nodes) node.remove();
      this.nodes = [];
      if (!this.rows.length) {
        this.nodes.push(this.box.appendChild(el("div", { class: "empty" }, this.emptyText)));
        return;
      }
      const top = this.box.scrollTop;
      const height = this.box.clientHeight || window.innerHeight;
      const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - 5);
      const last = Math.min(this.rows.length, Math.ceil((top + height) / ROW_HEIGHT) + 5);
      for (let i = first; i < last; i++) {
        const node = this.render(this.rows[i]);
        node.classList.add("vrow");
        node.style.top = i * ROW_HEIGHT + "px";
        this.nodes.push(this.box.appendChild(node));
      }
    }
  }

  // ------------------------------------------------------------ summary tab

  const KNOWN_SUMMARY = new Set(["schema", "run", "model", "label", "reasoning_effort", "judge_model", "variant",
                                 "rounds", "complete", "tasks", "warnings", "published_note"]);

  function scoreCell(task) {
    const score = task && task.metrics && task.metrics.score;
    if (!score) return "–";
    let text = fmt(score.mean);
    if (score.sd != null) text += " ± " + fmt(score.sd);
    const ci = score.ci95 || [];
    if (ci[0] != null) text += ` [${fmt(ci[0])}, ${fmt(ci[1])}]`;
    const c = task.counts || {};
    if (DATA.statuses.marked.some((status) => c[status])) text += " *";
    return text;
  }

  // As table.md writes it: "consistent (p = 0.41)", "lower (p < 0.001)", or "no verdict".
  function verdictText(p) {
    if (p.verdict == null) return "no verdict";
    if (p.p == null) return p.verdict;
    return `${p.verdict} (${p.p < 0.001 ? "p < 0.001" : "p = " + Number(p.p.toPrecision(2))})`;
  }

  function modelCardTable() {
    const tasks = [];
    for (const run of runs) for (const t of Object.keys(run.summary.tasks || {})) if (!tasks.includes(t)) tasks.push(t);
    const head = el("tr", null, el("th", null, "Model"), ...tasks.map((t) => el("th", { class: "num" }, taskColumn(t))));
    const body = [];
    for (const run of runs) {
      const s = run.summary;
      body.push(el("tr", { class: "measured" }, el("td", null, `${s.label || s.model} (${s.run}) — measured`),
        ...tasks.map((t) => el("td", { class: "num" }, scoreCell((s.tasks || {})[t])))));
      if (tasks.some((t) => s.tasks[t] && s.tasks[t].published)) {
        body.push(el("tr", null, el("td", null, "Δ vs published"), ...tasks.map((t) => {
          const p = s.tasks[t] && s.tasks[t].published;
          if (!p || p.delta == null) return el("td", { class: "num" }, "–");
          const off = p.verdict === "higher" || p.verdict === "lower";
          return el("td", { class: "num" + (off ? " outside" : "") }, signed(p.delta) + " · " + verdictText(p));
        })));
      }
    }
    for (const p of DATA.published) {
      body.push(el("tr", { class: "published" }, el("td", null, p.label + " (published)"),
        ...tasks.map((t) => el("td", { class: "num" }, fmt(p.values[t])))));
    }
    return el("table", { id: "model-card" }, el("thead", null, head), el("tbody", null, ...body));
  }

  function countsTable(run) {
    const tasks = Object.keys(run.summary.tasks || {});
    const present = [];
    for (const t of tasks) for (const k of Object.keys(run.summary.tasks[t].counts || {})) if (!present.includes(k)) present.push(k);
    const first = ["items", "planned", "judgments", "valid"].filter((k) => present.includes(k));
    const keys = [...first, ...present.filter((k) => !first.includes(k))];
    return el("table", { class: "counts" },
      el("thead", null, el("tr", null, el("th", null, "Benchmark"), ...keys.map((k) => el("th", { class: "num", title: k }, k.replace(/_/g, " "))))),
      el("tbody", null, ...tasks.map((t) => el("tr", null, el("td", null, taskColumn(t)),
        ...keys.map((k) => el("td", { class: "num", "data-task": t, "data-count": k }, String(run.summary.tasks[t].counts[k] ?? "–")))))));
  }

  function metricsTables(run) {
    const out = [];
    for (const [name, task] of Object.entries(run.summary.tasks || {})) {
      const metrics = task.metrics || {};
      const names = Object.keys(metrics).sort((a, b) => (a === "score" ? -1 : b === "score" ? 1 : a.localeCompare(b)));
      const taskRounds = task.rounds || [];
      out.push(el("details", null, el("summary", null, `${task.title || name}: every metric per round`),
        el("table", null, el("thead", null, el("tr", null, el("th", null, "metric"), el("th", null, "mean ± SD [95 % CI]"),
          ...taskRounds.map((r) => el("th", { class: "num" }, "round " + r)), el("th", { class: "num" }, "n"))),
        el("tbody", null, ...names.map((m) => el("tr", null, el("td", null, m), el("td", { class: "num" }, scoreCell({ metrics: { score: metrics[m] } })),
          ...taskRounds.map((r) => el("td", { class: "num" }, fmt((metrics[m].per_round || {})[String(r)]))),
          el("td", { class: "num" }, String(metrics[m].n ?? "–"))))))));
    }
    return out;
  }

  function valueText(value) {
    if (value == null) return "–";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function factsTable(run) {
    const m = run.manifest || {};
    const s = run.summary;
    const judge = m.judge || {};
    const facts = [
      ["run directory", run.dir],
      ["model", s.model], ["judge model (asked)", judge.model_asked || s.judge_model],
      ["judge models (returned)", (judge.models_returned || []).join(", ")],
      ["judge fingerprints", (judge.system_fingerprints || []).join(", ")],
      ["judge mode", judge.mode], ["data", s.variant], ["rounds", s.rounds],
      ["cost (USD)", m.cost_usd == null ? (run.manifest ? "unknown (no price for the judge model)" : "–") : "$" + Number(m.cost_usd).toFixed(4)],
      ["tokens", m.tokens], ["harness", m.harness ? `${m.harness.version} (${m.harness.git_commit || "no git commit"})` : null],
      ["python", m.python], ["platform", m.platform], ["packages", m.packages], ["accelerator", m.accelerator],
      ["written", m.written],
    ];
    // Fields other reports add (compatibility profile, verdicts…): shown as they are.
    for (const [key, value] of Object.entries(s)) if (!KNOWN_SUMMARY.has(key)) facts.push([key, value]);
    for (const [key, value] of Object.entries(m)) if (/compat|profile/i.test(key)) facts.push(["manifest " + key, value]);
    return el("table", { class: "facts" }, el("tbody", null, ...facts.filter(([, v]) => v != null && v !== "")
      .map(([k, v]) => el("tr", null, el("th", null, k), el("td", null, valueText(v))))));
  }

  function renderSummary() {
    const box = $("tab-summary");
    box.append(el("h2", null, runs.length > 1 ? "Model-card table (all runs)" : "Model-card table"));
    for (const run of runs) {
      if (run.summary.complete === false) {
        box.append(el("p", { class: "partial" }, `PARTIAL RESULTS in ${run.summary.run}: some planned judgments are missing ` +
          "or failed on the API (cells marked *); run the same command again to complete them."));
      }
      for (const warning of run.summary.warnings || []) {
        box.append(el("p", { class: "partial warning" }, `WARNING (${run.summary.run}): ${warning}`));
      }
      if (run.summary.published_note) box.append(el("p", { class: "note published-note" }, run.summary.published_note));
    }
    box.append(el("div", { class: "wide" }, modelCardTable()), el("p", { class: "note" },
      "Cells: mean over rounds ± SD over rounds [95 % bootstrap CI over questions]. Published rows: the llm-jp-4 model card."));
    for (const run of runs) {
      const s = run.summary;
      box.append(el("h2", null, `${s.label || s.model} — ${s.run}`));
      box.append(el("h3", null, "Status counts"), el("div", { class: "wide" }, countsTable(run)));
      box.append(...metricsTables(run));
      if (run.plots.length) box.append(el("h3", null, "Plots"), el("div", { class: "plots" },
        ...run.plots.map((p) => el("img", { src: p.src, alt: p.name, title: p.name }))));
      box.append(el("h3", null, "Manifest"), factsTable(run));
      if (run.manifest) box.append(el("details", null, el("summary", null, "manifest.json"), pre(JSON.stringify(run.manifest, null, 2))));
    }
    if (DATA.compare_plots.length) box.append(el("h2", null, "Comparison plots"), el("div", { class: "plots" },
      ...DATA.compare_plots.map((p) => el("img", { src: p.src, alt: p.name, title: p.name }))));
  }

  // ------------------------------------------------------------ item browser

  const itemList = new VirtualList($("item-list"), itemRow, "No rows match these filters.");

  function itemRow(entry) {
    const { row, item } = entry;
    const question = str(item[ITEM.turns][row[F.turn] - 1]) || "";
    const link = linkFor(entry);
    return el("div", { class: "items-grid" + (link === location.hash ? " selected" : ""), "data-link": link,
                       on: { click: () => { location.hash = link; } } },
      el("span", null, item[ITEM.task]), el("span", { title: item[ITEM.id] }, item[ITEM.id]), el("span", null, row[F.turn]),
      el("span", null, runs.length > 1 ? `${row[F.round]} · ${runs[entry.run].name}` : row[F.round]),
      el("span", null, item[ITEM.category] || ""),
      el("span", { class: statusClass(row[F.gen_status]) }, row[F.gen_status]),
      el("span", { class: "judge-status " + statusClass(row[F.judge_status]) }, row[F.judge_status]),
      el("span", { class: "num" }, fmt(row[F.score], 1)), el("span", { class: "num" }, fmt(entry.spread, 1)),
      el("span", { class: "num" }, row[F.length]), el("span", { class: "question" }, question.slice(0, 300)));
  }

  function linkFor(entry) {
    const item = entry.item;
    let link = `#${enc(item[ITEM.task])}/${enc(item[ITEM.id])}/${entry.row[F.turn]}/${entry.row[F.round]}`;
    if (runs.length > 1) link += "/" + enc(runs[entry.run].name);
    return link;
  }

  function setupItemFilters() {
    fillSelect($("f-run"), [["all", "all runs"], ...runs.map((r, i) => [String(i), r.name])]);
    $("f-run").value = "0";
    if (runs.length < 2) $("f-run-label").hidden = true;
    fillSelect($("f-task"), [["", "all"], ...taskNames.map((t) => [t, taskColumn(t)])]);
    fillSelect($("f-round"), [["", "all"], ...rounds.map((r) => [String(r), String(r)])]);
    refreshFacetOptions();
    for (const id of ["f-run", "f-task", "f-category", "f-round", "f-gen-status", "f-judge-status", "f-sort"]) {
      $(id).addEventListener("change", () => { if (id === "f-run" || id === "f-task") refreshFacetOptions(); applyItemFilters(); });
    }
    for (const id of ["f-score-min", "f-score-max", "f-search"]) $(id).addEventListener("input", applyItemFilters);
    $("filters").addEventListener("submit", (e) => e.preventDefault());
  }

  // Category options follow the task; status options (every status of the page) show how many rows of the chosen
  // run and task have it.
  function refreshFacetOptions() {
    const task = $("f-task").value;
    const run = $("f-run").value;
    const categories = [...new Set(items.filter((i) => !task || i[ITEM.task] === task).map((i) => i[ITEM.category]).filter((c) => c))].sort();
    fillSelect($("f-category"), [["", "all"], ...categories.map((c) => [c, c])], true);
    for (const [id, field] of [["f-gen-status", F.gen_status], ["f-judge-status", F.judge_status]]) {
      const counts = new Map([...new Set(entries.map((e) => e.row[field]))].map((status) => [status, 0]));
      for (const e of entries) {
        if ((run !== "all" && e.run !== Number(run)) || (task && e.item[ITEM.task] !== task)) continue;
        counts.set(e.row[field], (counts.get(e.row[field]) || 0) + 1);
      }
      fillSelect($(id), [["", "all"], ...[...counts].sort().map(([s, n]) => [s, `${s} (${n})`])], true);
    }
  }

  function applyItemFilters() {
    const started = performance.now();
    const run = $("f-run").value;
    const task = $("f-task").value;
    const category = $("f-category").value;
    const round = $("f-round").value ? Number($("f-round").value) : null;
    const genStatus = $("f-gen-status").value;
    const judgeStatus = $("f-judge-status").value;
    const min = $("f-score-min").value === "" ? null : Number($("f-score-min").value);
    const max = $("f-score-max").value === "" ? null : Number($("f-score-max").value);
    const q = setQuery($("f-search").value);
    const out = [];
    for (const e of entries) {
      const row = e.row;
      if (run !== "all" && e.run !== Number(run)) continue;
      if (task && e.item[ITEM.task] !== task) continue;
      if (category && e.item[ITEM.category] !== category) continue;
      if (round !== null && row[F.round] !== round) continue;
      if (genStatus && row[F.gen_status] !== genStatus) continue;
      if (judgeStatus && row[F.judge_status] !== judgeStatus) continue;
      if ((min !== null || max !== null) && (row[F.score] == null || (min !== null && row[F.score] < min) || (max !== null && row[F.score] > max))) continue;
      if (q && !(idMatches(e.item) || textMatches(e.item[ITEM.turns][row[F.turn] - 1]) || textMatches(row[F.final]) ||
                 judgeOutputs(row).some(textMatches))) continue;
      out.push(e);
    }
    const sort = $("f-sort").value;
    const nullsLast = (key, sign) => (a, b) => {
      const x = key(a), y = key(b);
      if (x == null || y == null) return (x == null) - (y == null) || a.order - b.order;
      return sign * (x - y) || a.order - b.order;
    };
    if (sort === "score-asc") out.sort(nullsLast((e) => e.row[F.score], 1));
    else if (sort === "score-desc") out.sort(nullsLast((e) => e.row[F.score], -1));
    else if (sort === "spread-desc") out.sort(nullsLast((e) => e.spread, -1));
    else if (sort === "length-desc") out.sort(nullsLast((e) => e.row[F.length], -1));
    else if (sort === "length-asc") out.sort(nullsLast((e) => e.row[F.length], 1));
    itemList.set(out);
    const total = run === "all" ? entries.length : runs[Number(run)].rows.length;
    $("f-count").textContent = `${out.length} of ${total} rows`;
    window.__view.filterMs = performance.now() - started;
  }

  // ------------------------------------------------------------ item detail

  function questionBlock(item, turn) {
    const out = [el("h3", null, "Question")];
    item[ITEM.turns].forEach((t, k) => {
      out.push(el("div", { class: "turn-label" }, `turn ${k + 1}` + (k + 1 === turn ? " (this turn)" : "")),
               pre(str(t), k + 1 === turn ? "question current-turn" : "question"));
      const ref = item[ITEM.refs] && item[ITEM.refs][k];
      if (ref != null) out.push(el("div", { class: "turn-label" }, `reference, turn ${k + 1}`), pre(str(ref), "reference"));
    });
    if (!item[ITEM.refs]) out.push(el("p", { class: "note" }, "No reference answer for this item."));
    return out;
  }

  function kv(label, value) {
    return value == null || value === "" ? null : el("div", { class: "kv" }, label + ": ", el("b", null, String(value)));
  }

  function judgeBlock(row) {
    const judgments = row[F.judgments];
    if (judgments.length <= 1) return callBlock(judgments[0], "judge: ", row[F.judge_status], row[F.score]);
    return el("div", { class: "judgments" },
      el("div", { class: "kv" }, "judge: ", el("b", { class: "judge-status " + statusClass(row[F.judge_status]) }, row[F.judge_status]),
        " · score ", el("b", { class: "judge-score" }, fmt(row[F.score])), ` · ${judgments.length} judge calls`),
      ...judgments.map((j) => callBlock(j, `call ${j[J.call]}: `, j[J.status])));
  }

  // One judgment (null: none stored); `score` is the slot's, shown where the slot has one judgment.
  function callBlock(j, label, status, score) {
    const messages = (j && j[J.messages]) || [];
    return el("div", { class: "judge" },
      el("div", { class: "kv" }, label, el("b", { class: "judge-status " + statusClass(status) }, status),
        score !== undefined ? " · score " : null, score !== undefined ? el("b", { class: "judge-score" }, fmt(score)) : null,
        j && j[J.scores] ? " · parsed " + JSON.stringify(j[J.scores]) : "",
        j && j[J.attempts] != null ? ` · attempts ${j[J.attempts]}` : "", j && j[J.model] ? ` · ${j[J.model]}` : ""),
      kv("judge error", j && str(j[J.error])),
      messages.length ? el("details", { class: "judge-messages" }, el("summary", null, `judge messages (${messages.length})`),
        ...messages.flatMap(([role, parts]) => [el("div", { class: "msg-role" }, role), pre(parts.map(str).join(""))])) : null,
      el("div", { class: "turn-label" }, "judge output"),
      pre((j && str(j[J.output])) ?? "(no judge output)", "judge-output"));
  }

  function answerBlock(row) {
    const reasoning = str(row[F.reasoning]);
    return [
      el("div", { class: "kv" }, "answer: ", el("b", { class: statusClass(row[F.gen_status]) }, row[F.gen_status]),
        ` · tokens in ${row[F.tokens_in] ?? "–"}, out ${row[F.tokens_out] ?? "–"}`,
        row[F.finish_reason] ? ` · finish ${row[F.finish_reason]}` : ""),
      kv("generation error", str(row[F.gen_error])),
      reasoning != null ? el("details", { class: "reasoning" }, el("summary", null, `reasoning (${reasoning.length} characters)`), pre(reasoning)) : null,
      el("div", { class: "turn-label" }, "final answer"),
      pre(str(row[F.final]) ?? "(no final answer: the judge saw an empty answer or the item was excluded)", "final-answer"),
    ];
  }

  function openItem(task, itemId, turn, round, runName) {
    const r = runName == null ? Math.max(0, Number($("f-run").value) || 0) : runs.findIndex((x) => x.name === runName);
    const itemIndex = items.findIndex((i) => i[ITEM.task] === task && i[ITEM.id] === itemId);
    const run = runs[r];
    if (!run || itemIndex < 0) return showDetail("Not found", [el("p", null, `No item ${task}/${itemId} in this page.`)]);
    const item = items[itemIndex];
    const body = [kv("run", run.name), kv("category", item[ITEM.category]), ...questionBlock(item, turn), el("h3", null, "Rounds")];
    let current = null;
    for (const rd of rounds) {
      const row = run.index.get(`${itemIndex}|${turn}|${rd}`);
      if (!row) continue;
      const box = el("div", { class: "round" + (rd === round ? " current" : ""), "data-round": rd },
        el("h3", null, `round ${rd}`), ...answerBlock(row), judgeBlock(row));
      if (rd === round) current = box;
      body.push(box);
    }
    showDetail(`${task} / ${itemId} · turn ${turn} · round ${round}` + (runs.length > 1 ? ` · ${run.name}` : ""), body);
    itemList.draw(); // mark the open row
    if (current) current.scrollIntoView({ block: "start" });
  }

  function showDetail(title, children) {
    $("detail-title").textContent = title;
    $("detail-body").replaceChildren(...children.filter((c) => c));
    $("detail").hidden = false;
    $("detail-body").scrollTop = 0;
  }

  function closeDetail() {
    $("detail").hidden = true;
    const tab = currentTab === "compare" ? "compare" : "items";
    history.replaceState(null, "", "#" + tab);
    itemList.draw();
  }

  // ------------------------------------------------------------ compare view

  const compareList = new VirtualList($("compare-list"), compareRow, "No common items.");
  let compareEntries = [];

  function setupCompare() {
    if (runs.length < 2) return;
    document.querySelector('[data-tab="compare"]').hidden = false;
    const choices = runs.map((r, i) => [String(i), r.name]);
    fillSelect($("c-a"), choices);
    fillSelect($("c-b"), choices);
    $("c-b").value = "1";
    fillSelect($("c-task"), [["", "all"], ...taskNames.map((t) => [t, taskColumn(t)])]);
    fillSelect($("c-category"), [["", "all"]]);
    for (const id of ["c-a", "c-b", "c-task", "c-category"]) $(id).addEventListener("change", () => {
      if (id === "c-task") {
        const task = $("c-task").value;
        fillSelect($("c-category"), [["", "all"], ...[...new Set(items.filter((i) => !task || i[ITEM.task] === task)
          .map((i) => i[ITEM.category]).filter((c) => c))].sort().map((c) => [c, c])]);
      }
      applyCompare();
    });
    $("c-search").addEventListener("input", applyCompare);
    $("c-filters").addEventListener("submit", (e) => e.preventDefault());
  }

  function pairDifferences(a, b) {
    const pair = DATA.pairs.find((p) => (p.a === a && p.b === b) || (p.a === b && p.b === a));
    if (!pair) return [];
    if (pair.a === a) return pair.differences;
    return pair.differences.map((d) => ({ ...d, difference: -d.difference,
      ci95: [d.ci95[1] == null ? null : -d.ci95[1], d.ci95[0] == null ? null : -d.ci95[0]] }));
  }

  function applyCompare() {
    const a = Number($("c-a").value), b = Number($("c-b").value);
    const task = $("c-task").value, category = $("c-category").value;
    const q = setQuery($("c-search").value);
    const differences = pairDifferences(a, b).filter((d) => (!task || d.task === task) && (!category || d.category === category || d.category === null));
    $("c-differences").replaceChildren(el("h3", null, `Mean differences ${runs[b].name} − ${runs[a].name}, paired on the questions both judged (95 % paired bootstrap CI)`),
      el("table", { id: "paired" }, el("thead", null, el("tr", null, el("th", null, "benchmark"), el("th", null, "category"),
        el("th", { class: "num" }, "B − A"), el("th", { class: "num" }, "95 % CI"), el("th", { class: "num" }, "questions"))),
      el("tbody", null, ...differences.map((d) => el("tr", null, el("td", null, taskColumn(d.task)), el("td", null, d.category ?? "all"),
        el("td", { class: "num " + (d.difference > 0 ? "diff-pos" : d.difference < 0 ? "diff-neg" : "") }, signed(d.difference)),
        el("td", { class: "num" }, d.ci95[0] == null ? "–" : `[${fmt(d.ci95[0])}, ${fmt(d.ci95[1])}]`), el("td", { class: "num" }, d.items))))));
    const out = [];
    const A = runs[a], B = runs[b];
    for (const [key, meanA] of A.mean) {
      if (!B.mean.has(key)) continue;
      const [itemIndex, turn] = key.split("|").map(Number);
      const item = items[itemIndex];
      if ((task && item[ITEM.task] !== task) || (category && item[ITEM.category] !== category)) continue;
      if (q && !(idMatches(item) || textMatches(item[ITEM.turns][turn - 1]) ||
                 rounds.some((rd) => textMatches((A.index.get(`${key}|${rd}`) || [])[F.final]) || textMatches((B.index.get(`${key}|${rd}`) || [])[F.final])))) continue;
      const meanB = B.mean.get(key);
      out.push({ item, itemIndex, turn, meanA, meanB, diff: meanA == null || meanB == null ? null : meanB - meanA });
    }
    out.sort((x, y) => (x.diff == null) - (y.diff == null) || Math.abs(y.diff) - Math.abs(x.diff) || x.itemIndex - y.itemIndex || x.turn - y.turn);
    compareEntries = out;
    compareList.set(out);
    $("c-count").textContent = `${out.length} item-turns, sorted by |B − A| (mean score over rounds)`;
  }

  function compareRow(entry) {
    const link = `#compare/${enc(entry.item[ITEM.task])}/${enc(entry.item[ITEM.id])}/${entry.turn}`;
    return el("div", { class: "compare-grid", "data-link": link, on: { click: () => { location.hash = link; } } },
      el("span", null, entry.item[ITEM.task]), el("span", { title: entry.item[ITEM.id] }, entry.item[ITEM.id]), el("span", null, entry.turn),
      el("span", null, entry.item[ITEM.category] || ""), el("span", { class: "num" }, fmt(entry.meanA)), el("span", { class: "num" }, fmt(entry.meanB)),
      el("span", { class: "num diff " + (entry.diff > 0 ? "diff-pos" : entry.diff < 0 ? "diff-neg" : "") }, signed(entry.diff)),
      el("span", null, (str(entry.item[ITEM.turns][entry.turn - 1]) || "").slice(0, 300)));
  }

  function openCompare(task, itemId, turn) {
    const itemIndex = items.findIndex((i) => i[ITEM.task] === task && i[ITEM.id] === itemId);
    if (itemIndex < 0) return showDetail("Not found", [el("p", null, `No item ${task}/${itemId} in this page.`)]);
    const a = Number($("c-a").value) || 0, b = Number($("c-b").value) || 1;
    const order = [a, b, ...runs.map((_, i) => i).filter((i) => i !== a && i !== b)];
    const key = `${itemIndex}|${turn}`;
    const body = [...questionBlock(items[itemIndex], turn)];
    const columns = `repeat(${order.length}, minmax(0, 1fr))`;
    const heads = el("div", { class: "side" }, ...order.map((r) => el("div", null, el("h3", null, runs[r].name),
      kv("mean score over rounds", fmt(runs[r].mean.get(key))))));
    heads.style.gridTemplateColumns = columns;
    body.push(heads);
    for (const rd of rounds) {
      const side = el("div", { class: "side" }, ...order.map((r) => {
        const row = runs[r].index.get(`${key}|${rd}`);
        return el("div", { class: "round" }, el("h3", null, `round ${rd} · score ${fmt(row && row[F.score])}`),
          ...(row ? [...answerBlock(row), judgeBlock(row)] : [el("p", { class: "note" }, "not in this run")]));
      }));
      side.style.gridTemplateColumns = columns;
      body.push(side);
    }
    showDetail(`${task} / ${itemId} · turn ${turn} · ${runs[b].name} − ${runs[a].name}`, body);
  }

  // ------------------------------------------------------------ tabs and deep links

  let currentTab = "summary";
  function showTab(name) {
    currentTab = name;
    for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== "tab-" + name;
    for (const link of document.querySelectorAll("#tabs a")) link.classList.toggle("active", link.dataset.tab === name);
    if (name === "items") itemList.draw();
    if (name === "compare") compareList.draw();
  }

  function route() {
    const parts = location.hash.slice(1).split("/").map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } });
    if (parts[0] === "compare" && parts.length >= 4 && runs.length > 1) {
      showTab("compare");
      openCompare(parts[1], parts[2], Number(parts[3]));
    } else if (parts.length >= 4) {
      showTab("items");
      openItem(parts[0], parts[1], Number(parts[2]), Number(parts[3]), parts[4]);
    } else {
      $("detail").hidden = true;
      showTab(["items", "compare"].includes(parts[0]) && (parts[0] !== "compare" || runs.length > 1) ? parts[0] : "summary");
    }
  }

  // ------------------------------------------------------------ start

  window.__view = { filterMs: null, readyMs: null, searchWarmMs: null, startMs, parseMs: parsedMs - startMs };
  const first = runs[0] ? runs[0].summary : {};
  document.title = (runs.length > 1 ? runs.map((r) => r.name).join(" vs ") : `${first.run}: ${first.label}`) + " — llmjp-eval";
  $("title").textContent = document.title;
  renderSummary();
  setupItemFilters();
  setupCompare();
  $("detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("detail").hidden) closeDetail(); });
  window.addEventListener("hashchange", route);
  applyItemFilters();
  if (runs.length > 1) applyCompare();
  route();
  window.__view.readyMs = performance.now();
  document.body.dataset.ready = "1";
  setTimeout(warmSearch, 50);
})();
