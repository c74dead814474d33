"""`run --dry-run`: what a run would still send, per task — generations, judge requests, estimated tokens and cost —
counted with the pipeline's own resume rules (`resume.py`), so the estimate and the run agree on what is pending.
Nothing is sent and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backends import announce_format, make_backend
from .config import Price, RunConfig
from .judge.ledger import cost_usd, price_for
from .judge.limits import estimate_tokens
from .records import Usage
from .resume import ResumeRules, refusal
from .store import Store
from .tasks import Task


def print_estimate(cfg: RunConfig, tasks: dict[str, Task], run_dir: Path, force: bool = False,
                   tokenizer_ready: bool = True) -> dict[str, Any]:
    """Print the estimate; the result holds its rows, the total, and `refusal`: why the run would not go on without
    --force (stored work it would replace, `resume.refusal`), None when it would.

    The backend is made as the run makes it (the reasoning format decided, the template kwargs checked: a config the
    run would refuse is refused here too); the stored answers' keys depend on its identity and rendering. A new run
    directory is estimated without it when there is nothing to check: a replay (a rejudge's dry run exports no
    replay file), or a tokenizer not here yet (offline, not fetched: the caller says what is missing)."""
    path = run_dir / "run.sqlite"
    store = Store(path, read_only=True) if path.exists() else None
    renders = cfg.model.backend != "replay" and tokenizer_ready
    backend = make_backend(cfg, generating=False) if renders or store is not None else None
    try:
        if backend is not None:
            announce_format(cfg, backend)
        rows = [_task_row(cfg, task, ResumeRules(cfg, {name: task}, store, backend)) for name, task in tasks.items()]
        why = refusal(ResumeRules(cfg, tasks, store, backend), run_dir) if store is not None else None
    finally:
        if backend is not None:
            backend.close()
        if store is not None:
            store.close()
    return _print(cfg, rows, None if force else why)


def _price(cfg: RunConfig) -> Price | None:
    return Price(input=0, output=0) if cfg.judge.mock else price_for(cfg.judge.prices, cfg.judge.model)


def _task_row(cfg: RunConfig, task: Task, rules: ResumeRules) -> dict[str, Any]:
    price = _price(cfg)
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


def _print(cfg: RunConfig, rows: list[dict[str, Any]], refusal: str | None) -> dict[str, Any]:
    import pandas as pd

    price = _price(cfg)
    frame = pd.DataFrame(rows)
    total = {"task": "total", "generations": int(frame["generations"].sum()), "judge_requests": int(frame["judge_requests"].sum()),
             "prompt_tokens": int(frame["prompt_tokens"].sum()), "completion_tokens": int(frame["completion_tokens"].sum()),
             "cost_usd": None if price is None else float(frame["cost_usd"].sum())}
    frame = pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
    frame["cost_usd"] = [_dollars(v) for v in frame["cost_usd"]]
    print(f"Dry run for {cfg.name}: nothing is sent. Judge {cfg.judge.model} ({cfg.judge.mode} mode); "
          f"answers estimated at {cfg.judge.estimate_answer_tokens} tokens, judge replies at {cfg.judge.estimate_output_tokens}.")
    print(frame.to_string(index=False))
    if price is None:
        model = cfg.judge.model
        print(f"No price for {model}: add its prices (USD per million tokens) to the config's judge section, e.g. "
              f"`prices: {{{model}: {{input: 2.50, output: 15.00}}}}` with your contract's figures, or once with "
              f"--set 'judge.prices={{{model}: {{input: 2.50, output: 15.00}}}}'.")
    return {"estimate": rows, "total": total, "refusal": refusal}


def _dollars(value: float | None) -> str:
    return "unknown price" if value is None or value != value else f"${value:,.2f}"
