"""`run --dry-run`: what a run would still send, per task — generations, judge requests, estimated tokens and cost —
counted with the pipeline's own resume rules (`resume.py`), so the estimate and the run agree on what is pending.
A judge prompt's answers are counted at their length where they are known (stored in the run, or in the file a
replay reads: a rejudge's or a pairwise run's), else at `judge.estimate_answer_tokens`. Nothing is sent and nothing
is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backends import announce_format, make_backend
from .backends.replay import ReplayBackend
from .config import Price, RunConfig
from .judge.ledger import cost_usd, price_for
from .judge.limits import estimate_tokens
from .records import Slot, Usage
from .resume import ResumeRules, refusal
from .store import Store
from .tasks import Task


def print_estimate(cfg: RunConfig, tasks: dict[str, Task], run_dir: Path, force: bool = False,
                   tokenizer_ready: bool = True) -> dict[str, Any]:
    """Print the estimate; the result holds its rows, the total, and `refusal`: why the run would not go on without
    --force (stored work it would replace, `resume.refusal`), None when it would.

    The backend is made as the run makes it (the reasoning format decided, the template kwargs checked: a config the
    run would refuse is refused here too); the stored answers' keys depend on its identity and rendering. A new run
    directory is estimated without it when its tokenizer is not here yet (offline, not fetched: the caller says what
    is missing). A replay's backend is its file (missing: refused, as the run would), whose answers are counted."""
    path = run_dir / "run.sqlite"
    store = Store(path, read_only=True) if path.exists() else None
    replays = cfg.model.backend == "replay"
    backend = make_backend(cfg, generating=False) if replays or tokenizer_ready or store is not None else None
    try:
        if backend is not None and not replays:
            announce_format(cfg, backend)
        replay = backend if isinstance(backend, ReplayBackend) else None
        rows = [_task_row(cfg, task, ResumeRules(cfg, {name: task}, store, backend), replay) for name, task in tasks.items()]
        why = refusal(ResumeRules(cfg, tasks, store, backend), run_dir) if store is not None else None
    finally:
        if backend is not None:
            backend.close()
        if store is not None:
            store.close()
    return _print(cfg, rows, None if force else why)


def _price(cfg: RunConfig) -> Price | None:
    return Price(input=0, output=0) if cfg.judge.mock else price_for(cfg.judge.prices, cfg.judge.model)


def _task_row(cfg: RunConfig, task: Task, rules: ResumeRules, replay: ReplayBackend | None) -> dict[str, Any]:
    price = _price(cfg)
    templates = task.prompts.templates.values()
    template_tokens = sum(len(t.text) + len(t.system_prompt or "") for t in templates) // len(templates) // 3
    judge_pending = prompt_tokens = known = guessed = 0
    for call in rules.pending_judgments(generating=True):  # an answer to be generated again is judged again
        judge_pending += 1
        item = task.item(call.item_id)
        text = " ".join(item.turns[: call.turn]) + " ".join((item.references or ())[: call.turn])
        prompt_tokens += estimate_tokens(text) + template_tokens
        for turn in range(1, call.turn + 1):
            slot = Slot(call.round, call.task, call.item_id, turn)
            answers = [_known_answer(rules, replay, slot)]
            if task.opponent is not None:  # a pairwise prompt holds the other run's answer too
                answers.append(gen.final if (gen := task.opponent.get(slot)) is not None else None)
            for answer in answers:
                known, guessed = known + (answer is not None), guessed + (answer is None)
                prompt_tokens += cfg.judge.estimate_answer_tokens if answer is None else estimate_tokens(answer)
    completion_tokens = judge_pending * cfg.judge.estimate_output_tokens
    cost = cost_usd(price, Usage(prompt_tokens, completion_tokens), cfg.judge.batch_discount if cfg.judge.mode == "batch" else None)
    return {"task": task.name, "generations": len(rules.pending_generations()), "judge_requests": judge_pending,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "cost_usd": cost,
            "answers_known": known, "answers_guessed": guessed}


def _known_answer(rules: ResumeRules, replay: ReplayBackend | None, slot: Slot) -> str | None:
    """The answer a judge prompt of this slot will hold, where it is known already: stored in the run (and not to be
    generated again), or in the file a replay reads; None: it is to be generated."""
    if rules.store is not None and rules.is_stored(slot, to_judge=True):
        gen = rules.store.generation(slot)
        return gen.final or "" if gen is not None else None
    if replay is not None:
        return replay.answer(slot)
    return None


def _print(cfg: RunConfig, rows: list[dict[str, Any]], refusal: str | None) -> dict[str, Any]:
    import pandas as pd

    price = _price(cfg)
    frame = pd.DataFrame(rows)
    total = {"task": "total", **{column: int(frame[column].sum()) for column in
                                 ("generations", "judge_requests", "prompt_tokens", "completion_tokens",
                                  "answers_known", "answers_guessed")},
             "cost_usd": None if price is None else float(frame["cost_usd"].sum())}
    frame = pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
    frame["cost_usd"] = [_dollars(v) for v in frame["cost_usd"]]
    if cfg.model.backend == "replay":
        frame = frame.rename(columns={"generations": "answers_replayed"})
    known, guessed = total["answers_known"], total["answers_guessed"]
    at_length, at_guess = "counted at their length", f"estimated at {cfg.judge.estimate_answer_tokens} tokens each"
    answers = (f"{known:,} {at_length}, {guessed:,} yet to be generated {at_guess}" if known and guessed else
               f"{known:,} {at_length}" if known else f"{guessed:,}, yet to be generated, {at_guess}" if guessed else None)
    print(f"Dry run for {cfg.name}: nothing is sent. Judge {cfg.judge.model} ({cfg.judge.mode} mode); "
          + (f"the judge prompts' answers: {answers}; " if answers else "no judge request pending; ")
          + f"judge replies estimated at {cfg.judge.estimate_output_tokens} tokens.")
    print(frame.drop(columns=["answers_known", "answers_guessed"]).to_string(index=False))
    if price is None:
        model = cfg.judge.model
        print(f"No price for {model}: add its prices (USD per million tokens) to the config's judge section, e.g. "
              f"`prices: {{{model}: {{input: 2.50, output: 15.00}}}}` with your contract's figures, or once with "
              f"--set 'judge.prices={{{model}: {{input: 2.50, output: 15.00}}}}'.")
    return {"estimate": rows, "total": total, "refusal": refusal}


def _dollars(value: float | None) -> str:
    return "unknown price" if value is None or value != value else f"${value:,.2f}"
