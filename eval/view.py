"""A run you can look at: one self-contained `report.html` (styles, script, data and plots inline; no network).

The page shows what the reports already computed (summary.json, manifest.json, plots/*.png) plus every item from
the store: answers, reasoning, the exact judge messages and outputs. Several runs make a compare view, with the
per-category paired differences computed by the same code as `compare`.

The data travel as one JSON blob in `<script type="application/json">`. Every text appears once in a string
table and records refer to it by index; a judge message is stored as the list of strings it concatenates (template
pieces, question, reference, answer), so the answers inside the judge prompts cost nothing twice. The blob escapes
`<`, `>`, `&`, U+2028 and U+2029, so no text can close the script element; the page's Content-Security-Policy allows
only its own script (by hash), so even markup that got in could not run.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import UserError
from .metrics import paired_difference
from .records import SINGLE_CALL, SLOT_IN_TASK, Generation, Item, Judgment, Planned, Slot
from .results import RunSummary, read_summary
from .run_meta import ITEMS, TASKS
from .rundir import strict_json, write_text
from .statuses import CALL_FAILURES, TRANSIENT_GENERATION, TRANSIENT_JUDGMENT, JudgmentStatus
from .store import Store
from .summary import load_published, published_label, published_value, task_observations

VIEW_SCHEMA = "llmjp-eval/view/v2"
PAGE_DIR = Path(__file__).resolve().parent / "view_page"
SPLIT_MIN = 8  # shorter strings are not worth a reference inside a judge message


class Strings:
    """The page's string table: each distinct text once, referred to by index."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, text: str | None) -> int | None:
        return None if text is None else self.index_of(text)

    def index_of(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.values)
            self.values.append(text)
        return index

    def split(self, content: str, known: list[str]) -> list[int]:
        """`content` as indices of strings that concatenate to it, reusing `known` texts where they occur."""
        known = sorted({k for k in known if k and len(k) >= SPLIT_MIN}, key=len, reverse=True)
        parts: list[int] = []
        position = 0
        while known:
            hits = [(i, -len(k), k) for k in known if (i := content.find(k, position)) >= 0]
            if not hits:
                break
            start, _, text = min(hits)
            if start > position:
                parts.append(self.index_of(content[position:start]))
            parts.append(self.index_of(text))
            position = start + len(text)
        if position < len(content) or not parts:
            parts.append(self.index_of(content[position:]))
        return parts


# One array per planned slot, with one array per judgment of the slot (one per judge call its task makes); the page
# reads the positions from `row_fields` and `judgment_fields` in the data.
ROW_FIELDS = ["item", "turn", "round", "gen_status", "final", "reasoning", "tokens_in", "tokens_out", "finish_reason",
              "gen_error", "judge_status", "score", "judgments", "length"]
JUDGMENT_FIELDS = ["call", "status", "scores", "output", "attempts", "messages", "error", "model"]


def _run_files(run_dir: Path, reports: Path) -> tuple[RunSummary, dict[str, Any] | None]:
    if not (run_dir / "run.sqlite").is_file():
        raise UserError(f"{run_dir}: no run.sqlite here; give run directories (results/<name>)")
    summary_path = reports / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"{summary_path}: not found; run `python -m eval report {run_dir}` first")
    summary = read_summary(summary_path)
    try:
        manifest_path = reports / "manifest.json"
        manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else None
    except json.JSONDecodeError as e:
        raise UserError(f"{run_dir}: unreadable report file ({e}); run `python -m eval report {run_dir}` again") from None
    return summary, manifest


def page_plots(folder: Path, names: list[str] | None = None) -> list[dict[str, str]]:
    """The PNGs of `folder` (all, or those named) as images the page can show."""
    paths = [folder / n for n in names] if names is not None else sorted(folder.glob("*.png"))
    return [{"name": p.stem, "src": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")}
            for p in paths if p.is_file()]


class _RunReader:
    """One run's rows for the page, and its observations for paired differences. `reports`: the folder of its report
    files (summary.json, manifest.json, plots/), the run directory unless they were written elsewhere."""

    def __init__(self, run_dir: Path, strings: Strings, items: dict[tuple[str, str], int], item_rows: list[list[Any]],
                 reports: Path | None = None):
        self.run_dir = run_dir
        self.reports = reports or run_dir
        self.summary, self.manifest = _run_files(run_dir, self.reports)
        store = Store(run_dir / "run.sqlite", read_only=True)
        try:
            self.metas = store.meta(TASKS) or {}
            stored_items = {(task, i.item_id): i for task, rows in (store.meta(ITEMS) or {}).items() for i in rows}
            plan = store.plan()
            generations = {g.slot: g for g in store.records("generation")}
            judgments: dict[Slot, list[Judgment]] = {}
            for j in store.records("judgment"):
                judgments.setdefault(j.slot, []).append(j)
            self.observations = task_observations(store)
        finally:
            store.close()
        self.categories = {(p.task, p.item_id): p.category for p in plan}
        scores = {task: obs[obs["metric"] == "score"].set_index(list(SLOT_IN_TASK))["value"].to_dict()
                  for task, obs in self.observations.items()}
        seen = _seen_turns(generations) if not stored_items else {}
        self.rows = []
        for p in plan:
            key = (p.task, p.item_id)
            if key not in items:
                items[key] = len(item_rows)
                item_rows.append(_item_row(strings, p, stored_items.get(key), seen))
            meta = self.metas.get(p.task)
            calls = meta.rules.calls if meta else (SINGLE_CALL,)
            made = sorted((j for j in judgments.get(p.slot, ()) if j.call in calls), key=lambda j: calls.index(j.call))
            self.rows.append(_row(strings, items[key], p, generations.get(p.slot), made, calls,
                                  scores.get(p.task, {}).get(tuple(getattr(p, c) for c in SLOT_IN_TASK)), stored_items.get(key)))


def _seen_turns(generations: dict[Slot, Generation]) -> dict[tuple[str, str], list[str]]:
    """Per item, the user turns of its latest-turn generation (for runs whose store does not keep its items)."""
    latest: dict[tuple[str, str], Generation] = {}
    for slot, g in generations.items():
        known = latest.get((slot.task, slot.item_id))
        if known is None or slot.turn >= known.turn:
            latest[slot.task, slot.item_id] = g
    return {key: [m["content"] or "" for m in g.messages if m["role"] == "user"] for key, g in latest.items()}


def _item_row(strings: Strings, p: Planned, item: Item | None, seen: dict[tuple[str, str], list[str]]) -> list[Any]:
    """[task, item_id, category, turns, references]: from the store's items, else the user turns the model saw
    (runs made before the store kept its items have no references)."""
    if item is not None:
        turns, references = list(item.turns), item.references
    else:
        turns, references = seen.get((p.task, p.item_id), []), None
    return [p.task, p.item_id, p.category, [strings.add(t) for t in turns],
            [strings.add(r) for r in references] if references else None]


def _row(strings: Strings, item_index: int, p: Planned, gen: Generation | None, judgments: list[Judgment],
         calls: tuple[str, ...], score: float | None, item: Item | None) -> list[Any]:
    final = gen.final if gen else None
    # The texts a judge prompt is made of: earlier answers of this item and round, its turns and references.
    known = [final or ""] + [m["content"] or "" for m in (gen.messages if gen else []) if m["role"] != "system"]
    if item is not None:
        known += list(item.turns) + list(item.references or ())
    return [item_index, p.turn, p.round, gen.status if gen else "missing", strings.add(final),
            strings.add(gen.reasoning or None) if gen else None, gen.tokens_in if gen else None,
            gen.tokens_out if gen else None, gen.finish_reason if gen else None, strings.add(gen.error if gen else None),
            _slot_status(judgments, calls), score,
            [[j.call, j.status, j.scores, strings.add(j.raw), j.attempts,
              [[m["role"], strings.split(m["content"], known)] for m in j.messages], strings.add(j.error),
              j.returned_model or j.judge_model] for j in judgments],
            len(final or "")]


def _slot_status(judgments: list[Judgment], calls: tuple[str, ...]) -> str:
    """A slot's judge status on the page: its one judgment's; for several calls, the first that is not `ok` in the
    calls' order, `missing` where a call has no judgment, else `ok`."""
    by_call = {j.call: j.status for j in judgments}
    for call in calls:
        status = by_call.get(call, "missing")
        if status != JudgmentStatus.OK:
            return status
    return JudgmentStatus.OK.value


def _category_differences(a: _RunReader, b: _RunReader) -> list[dict[str, Any]]:
    """b − a per task and per category, paired on the questions both judged (the code `compare` uses)."""
    out = []
    for task in a.observations:
        if task not in b.observations:
            continue
        obs_a, obs_b = a.observations[task], b.observations[task]
        overall = paired_difference(obs_a, obs_b, "score")
        if overall:
            out.append({"task": task, "category": None, **overall.dump()})
        categories = sorted({c for (t, _), c in a.categories.items() if t == task and c})
        for category in categories:
            ids = {i for (t, i), c in a.categories.items() if t == task and c == category}
            d = paired_difference(obs_a[obs_a["item_id"].isin(ids)], obs_b[obs_b["item_id"].isin(ids)], "score")
            if d:
                out.append({"task": task, "category": category, **d.dump()})
    return out


def _run_names(readers: list[_RunReader]) -> list[str]:
    """The runs' names, made distinct (deep links and selectors name a run) by their folders, else their positions."""
    names = [r.summary.run for r in readers]
    if len(set(names)) < len(names):
        names = [f"{n} ({r.run_dir.name})" for n, r in zip(names, readers, strict=True)]
    if len(set(names)) < len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return names


def _published_rows(summaries: list[RunSummary]) -> list[dict[str, Any]]:
    """The published rows, each with its value per task of the runs (under the column the task names)."""
    columns = {task: entry.published_column for s in summaries for task, entry in s.tasks.items()}
    return [{"label": published_label(row),
             "values": {task: v for task, column in columns.items() if (v := published_value(row, column)) is not None}}
            for row in load_published().to_dict("records")]


def page_data(run_dirs: list[Path], extra_plots: Sequence[dict[str, str]] = (), reports: Path | None = None) -> dict[str, Any]:
    """The page's data: the runs' summaries (as summary.json holds them), manifests, plots and rows, the paired
    differences of every pair of runs, the published rows."""
    strings = Strings()
    items: dict[tuple[str, str], int] = {}
    item_rows: list[list[Any]] = []
    readers = [_RunReader(d, strings, items, item_rows, reports) for d in run_dirs]
    runs = [{"name": name, "dir": str(r.run_dir), "summary": r.summary.dump(), "manifest": r.manifest,
             "plots": page_plots(r.reports / "plots"), "rows": r.rows} for r, name in zip(readers, _run_names(readers), strict=True)]
    pairs = [{"a": i, "b": k, "differences": _category_differences(readers[i], readers[k])}
             for i in range(len(readers)) for k in range(i + 1, len(readers))]
    # The page colours and marks statuses by the rules of statuses.py, not by lists of its own.
    statuses = {"valid": [JudgmentStatus.OK], "failed": sorted({*CALL_FAILURES, *TRANSIENT_GENERATION, "missing"}),
                "marked": sorted({*TRANSIENT_JUDGMENT, "missing"})}
    return {"schema": VIEW_SCHEMA, "row_fields": ROW_FIELDS, "judgment_fields": JUDGMENT_FIELDS, "statuses": statuses,
            "strings": strings.values,
            "items": item_rows, "runs": runs, "pairs": pairs, "published": _published_rows([r.summary for r in readers]),
            "compare_plots": list(extra_plots)}


def script_json(data: Any) -> str:
    """JSON that can sit inside a <script> element: nothing in it can close the element or open a comment."""
    text = json.dumps(strict_json(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def fill(template_name: str, parts: dict[str, str]) -> str:
    """A template of view_page/ with each `/*MARKER*/` replaced by its part; inserted text is never searched again."""
    template = (PAGE_DIR / template_name).read_text(encoding="utf-8")
    pieces = re.split(r"/\*([A-Z]+)\*/", template)  # text, marker, text, …
    if sorted(pieces[1::2]) != sorted(parts):
        raise RuntimeError(f"{PAGE_DIR / template_name}: each of the markers {sorted(parts)} must appear once")
    return "".join(parts[p] if i % 2 else p for i, p in enumerate(pieces))


def render_page(data: dict[str, Any]) -> str:
    style = (PAGE_DIR / "page.css").read_text(encoding="utf-8")
    script = (PAGE_DIR / "page.js").read_text(encoding="utf-8")
    csp = (f"default-src 'none'; img-src data:; style-src {csp_hash(style)}; script-src {csp_hash(script)}; "
           "base-uri 'none'; form-action 'none'")
    return fill("page.html", {"CSP": csp, "STYLE": style, "DATA": script_json(data), "SCRIPT": script})


def write_page(run_dirs: list[Path], out: Path | None = None, extra_plots: Sequence[dict[str, str]] = (),
               reports: Path | None = None) -> Path:
    """Write report.html (into the single run, or `out`: a folder or an .html path) and return its path. `reports`:
    the folder of a single run's report files when they were written elsewhere (`report RUN --out`)."""
    if out is None:
        if len(run_dirs) > 1:
            raise UserError("several runs: give --out (a folder or a .html file) for the comparison page")
        out = run_dirs[0]
        refuse_read_only(out, "a folder or a .html file for the page")
    path = out if out.suffix == ".html" else out / "report.html"
    page = render_page(page_data(run_dirs, extra_plots, reports))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page)
    return path


def refuse_read_only(run_dir: Path, what: str) -> None:
    """A command that would write into a run directory this process cannot write says so, and what to give."""
    if run_dir.is_dir() and not os.access(run_dir, os.W_OK):
        raise UserError(f"{run_dir} is read-only: nothing can be written there; give --out ({what}) to write elsewhere")


def compare_plots(out: Path) -> list[dict[str, str]]:
    return page_plots(out, ["compare.png", "compare_categories.png"])


def compare_link(task: str, item_id: str, turn: int) -> str:
    """The fragment that opens one item-turn side by side on a page of several runs (page.js's `compareRow`)."""
    return f"#compare/{quote(task, safe='')}/{quote(item_id, safe='')}/{turn}"


def open_in_browser(path: Path) -> None:
    """Open the page in this machine's browser; where none can start (a headless node) say so and how to look."""
    if not webbrowser.open(path.resolve().as_uri()):
        raise UserError(f"--open: no browser can be started on this machine (no display?); the page is {path}: copy it to "
                        "a machine with a browser, or serve it with --serve and open it through `ssh -L 8765:localhost:8765`")


def page_server(path: Path, host: str = "127.0.0.1", port: int = 8765) -> http.server.ThreadingHTTPServer:
    """A server of the page alone (nothing else of the folder), answering only requests addressed to it by a loopback
    name or its own address and port: a page of another site that rebinds its name to 127.0.0.1 sends its own name
    as Host and is refused (421)."""
    body = path.read_bytes()
    addressed_to: set[str] = set()  # the Host values answered, known once the port is bound

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            if (self.headers.get("Host") or "").lower() not in addressed_to:
                self.send_error(421, "Misdirected Request", "this server answers only to " + ", ".join(sorted(addressed_to)))
                return
            if self.path.split("?", 1)[0] not in ("/", f"/{path.name}"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    try:
        server = http.server.ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise UserError(f"--serve: cannot listen on {host}:{port} ({e.strerror}); pick another --port") from None
    bound = server.server_address[1]
    names = {"localhost", "127.0.0.1", "[::1]", f"[{host}]" if ":" in host else host.lower()}
    addressed_to.update(f"{name}:{bound}" for name in names)
    return server


def serve(path: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the page until Ctrl-C; for a GPU node reached through ssh -L (the same port on both ends)."""
    server = page_server(path, host, port)
    print(f"serving {path} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
