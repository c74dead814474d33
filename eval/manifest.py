"""`manifest.json`: where a run's numbers come from — harness version and commit, command, Python and packages,
the accelerator, the model and its rendered prompts, the config's hash, the compat profile, assets, judge models
and fingerprints, tokens and cost, stage times and batches. Unlike the summary it changes from one invocation to
the next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig
from .judge.ledger import price_for
from .records import JudgmentUsage, Usage
from .run_meta import BACKEND_IDENTITY, COMMAND, CONFIG, JUDGE_LEARNED_PARAMS, MODEL_FORMAT, PROVENANCE, WARNINGS
from .store import Store


@dataclasses.dataclass(frozen=True)
class GenerationCost:
    tokens_out: int | None
    prompt_hash: str | None


def manifest(store: Store, cfg: RunConfig, activity: dict[str, Any]) -> dict[str, Any]:
    judgments = store.fields("judgment", JudgmentUsage)
    usage = Usage()
    spent = 0.0
    per_task: dict[str, dict[str, Any]] = {}
    for j in judgments:
        if not j.cached:
            call = Usage(**{k: (j.usage or {}).get(k, 0) for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens")})
            usage.add(call)
            spent += j.cost_usd or 0.0
            task = per_task.setdefault(j.task, {"prompt_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.0})
            for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
                task[k] += getattr(call, k)
            task["cost_usd"] += j.cost_usd or 0.0
    gens = store.fields("generation", GenerationCost)
    config = store.meta(CONFIG)
    return {
        "harness": {"version": __version__, "git_commit": git_commit()},
        "command": store.meta(COMMAND),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "packages": _versions(["torch", "transformers", "datasets", "openai", "pandas", "vllm"]),
        "accelerator": _accelerator(),
        "model": {"path": cfg.model.path, "revision": getattr(cfg.model, "revision", None),
                  "chat_template_kwargs": getattr(cfg.model, "chat_template_kwargs", None),
                  "backend_identity": store.meta(BACKEND_IDENTITY), "format": store.meta(MODEL_FORMAT),
                  "distinct_rendered_prompts": len({g.prompt_hash for g in gens if g.prompt_hash})},
        "config_sha256": _sha(config.snapshot() if config is not None else None),
        "compat": dataclasses.asdict(cfg.profile),
        "assets": store.meta(PROVENANCE),
        "asset_warnings": store.meta(WARNINGS),
        "judge": {"model_asked": cfg.judge.model, "models_returned": sorted({j.returned_model for j in judgments if j.returned_model}),
                  "system_fingerprints": sorted({j.fingerprint for j in judgments if j.fingerprint}),
                  "learned_parameters": store.meta(JUDGE_LEARNED_PARAMS), "mode": cfg.judge.mode},
        "tokens": {"generation_out": sum(g.tokens_out or 0 for g in gens), "judge_prompt": usage.prompt_tokens,
                   "judge_completion": usage.completion_tokens, "judge_reasoning": usage.reasoning_tokens},
        "cost_usd": round(spent, 6) if price_for(cfg.judge.prices, cfg.judge.model) else None,
        "judge_per_task": per_task,
        "stages": store.events(),
        "batches": store.batches(),
        "this_invocation": activity,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _sha(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


SOURCE_ROOT = Path(__file__).resolve().parent.parent


def git_commit(source_root: Path = SOURCE_ROOT) -> str | None:
    """The commit of this source tree; None for an installed package (even one installed inside another repository,
    whose commit would say nothing about this code)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=source_root, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != source_root.resolve():
        return None
    return lines[1]


def _versions(names: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _accelerator() -> dict[str, Any]:
    torch = sys.modules.get("torch")  # only a local engine loads torch; a remote backend's GPU is not ours to report
    try:
        if torch is not None and torch.cuda.is_available():
            return {"cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    except Exception:  # reporting must not fail on a broken driver
        pass
    return {"cuda": None, "gpu": None}
