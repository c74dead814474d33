"""`run --dry-run`: what a run would still send, per task — generations, judge requests, estimated tokens and cost —
counted with the pipeline's own resume rules (`resume.py`), so the estimate and the run agree on what is pending.
Nothing is sent and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backends import announce_format, make_backend
from .config import RunConfig
from .judge.ledger import cost_usd, price_for
from .judge.limits import estimate_tokens
from .records import Usage
from .resume import ResumeRules
from .store import Store
from .tasks import Task


def print_estimate(cfg: RunConfig, tasks: dict[str, Task], run_dir: Path) -> dict[str, Any]:
    # The backend as the run starts it (the reasoning format decided, the template kwargs checked: a config the run
    # would refuse is refused here too); the stored answers' keys depend on its identity and rendering.
    backend = make_backend(cfg, generating=False)
    path = run_dir / "run.sqlite"
    store = Store(path) if path.exists() else None
    try:
        announce_format(cfg, backend)
        rows = [_task_row(cfg, task, ResumeRules(cfg, {name: task}, store, backend)) for name, task in tasks.items()]
    finally:
        backend.close()
        if store is not None:
            store.close()
    return _print(cfg, rows)


def _task_row(cfg: RunConfig, task: Task, rules: ResumeRules) -> dict[str, Any]:
    price = price_for(cfg.judge.prices, cfg.judge.model)
    templates = task.prompts.templates.values()
    template_tokens = sum(len(t.text) + len(t.system_prompt or "") for t in templates) // len(templates) // 3
    judge_pending = prompt_tokens = 0
    for slot in rules.pending_judgments(generating=True):  # an answer to be generated again is judged again
        judge_pending += 1
        item = task.item(slot.item_id)
        text = " ".join(item.turns[: slot.turn]) + " ".join((item.references or ())[: slot.turn])
        prompt_tokens += estimate_tokens(text) + template_tokens + slot.turn * cfg.judge.estimate_answer_tokens
    completion_tokens = judge_pending * cfg.judge.estimate_output_tokens
    cost = cost_usd(price, Usage(prompt_tokens, completion_tokens), cfg.judge.batch_discount if cfg.judge.mode == "batch" else None)
    return {"task": task.name, "generations": len(rules.pending_generations()), "judge_requests": judge_pending,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "cost_usd": cost}


def _print(cfg: RunConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    import pandas as pd

    price = price_for(cfg.judge.prices, cfg.judge.model)
    frame = pd.DataFrame(rows)
    total = {"task": "total", "generations": int(frame["generations"].sum()), "judge_requests": int(frame["judge_requests"].sum()),
             "prompt_tokens": int(frame["prompt_tokens"].sum()), "completion_tokens": int(frame["completion_tokens"].sum()),
             "cost_usd": None if price is None else float(frame["cost_usd"].sum())}
    frame = pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
    print(f"Dry run for {cfg.name}: nothing is sent. Judge {cfg.judge.model} ({cfg.judge.mode} mode); "
          f"answers estimated at {cfg.judge.estimate_answer_tokens} tokens, judge replies at {cfg.judge.estimate_output_tokens}.")
    print(frame.to_string(index=False, na_rep="unknown price",
                          formatters={"cost_usd": lambda v: "unknown price" if v is None or pd.isna(v) else f"${v:,.2f}"}))
    if price is None:
        print(f"No price for {cfg.judge.model} in judge.prices: add one (USD per million tokens) to get a cost.")
    return {"estimate": rows, "total": total}
