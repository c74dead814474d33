"""What a run needs before it starts, looked at without the network first: the judge key, the benchmark files and
datasets in their caches, the model's tokenizer and weights in the Hugging Face cache.

Something that is not cached is downloaded by the run when its server answers. Whether it answers is asked once per
server, all at once, with a short deadline (`PROBE_DEADLINE_S`); a Hugging Face hub that does not answer switches
this process to offline mode (`sources.go_offline`), so transformers and datasets read their caches at once instead
of retrying for a minute. `check`, `run --dry-run` and `run` start here: everything missing is said at once, one
line each with the command that fixes it, before any lock, store or download.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .config import JudgeConfig, RunConfig
from .smoke_model import is_builtin
from .sources import FileRef, cache_root, go_offline, hf_datasets_cache, hf_is_cached, is_cached, mirrored, offline
from .tasks import TaskSpec, load_spec, task_file_refs

PROBE_DEADLINE_S = 3.0
OPENAI_API = "https://api.openai.com/v1"

Purpose = Literal["check", "estimate", "run"]
# What a missing thing stops: the tasks' items (nothing can be counted or run without them), the model's rendering
# (the tokenizer: a run, and a dry run of a run directory that holds answers), or only the run itself.
Stops = Literal["data", "tokenizer", "run"]


def hub_endpoint() -> str:
    """The Hugging Face hub this process would ask (`HF_ENDPOINT`, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@dataclass(frozen=True)
class Missing:
    what: str
    fix: str
    stops: Stops

    def line(self) -> str:
        return f"missing  {self.what} → {self.fix}"


@dataclass
class Preflight:
    """`notes`: what the user should know (a server that does not answer); `missing`: what the run cannot do without;
    `downloads`: what the run will download (its server answers)."""

    notes: list[str] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)

    def stopping(self, *stops: Stops) -> list[Missing]:
        return [m for m in self.missing if m.stops in stops]


@dataclass(frozen=True)
class _Need:
    """Something the run needs that is not on this machine: it comes from `url` (None: nothing can download it)."""

    what: str
    url: str | None
    stops: Stops
    fix: str = ""


def judge_server(judge: JudgeConfig) -> str:
    """The server the judge's requests go to."""
    if judge.provider == "azure" and judge.azure is not None:
        return server_of(judge.azure.endpoint)
    return server_of(judge.base_url or OPENAI_API)


def fetch_command(config: str, overrides: Iterable[str] = ()) -> str:
    return shlex.join(["python", "-m", "eval", "fetch", config, *[a for o in overrides for a in ("--set", o)]])


def inspect(cfg: RunConfig, purpose: Purpose, fetch: str) -> Preflight:
    """Everything `purpose` needs, checked from the caches; servers are asked only whether they answer."""
    result = Preflight()
    specs = {name: load_spec(name, cfg.task_options.get(name)) for name in cfg.tasks}
    needs = _key_needs(cfg) + _task_needs(cfg, specs) + _model_needs(cfg, purpose)
    if offline():
        go_offline()  # LLMJP_EVAL_OFFLINE means the Hugging Face libraries too
        why = {server_of(n.url): "downloads are off (HF_HUB_OFFLINE or LLMJP_EVAL_OFFLINE is set)" for n in needs if n.url}
    else:
        servers = {server_of(n.url) for n in needs if n.url}
        if _uses_hub(cfg, specs):  # even with everything cached, a hub that does not answer costs a minute of retries
            servers.add(hub_endpoint())
        why = {server: f"{server} does not answer ({reason})" for server, reason in unreachable(servers).items()}
        if hub_endpoint() in why:
            go_offline()
            result.notes.append(f"note     {why[hub_endpoint()]}: working from the local caches only (HF_HUB_OFFLINE=1 "
                                "for this command; export it on an offline machine to skip this check)")
    for need in needs:
        server = server_of(need.url) if need.url else None
        if server is None:
            result.missing.append(Missing(need.what, need.fix, need.stops))
        elif server in why:
            fix = f"`{fetch}` where {server} answers, then copy {_caches_for(need)} here"
            result.missing.append(Missing(f"{need.what}; {why[server]}", fix, need.stops))
        else:
            result.downloads.append(need.what)
    return result


# ---------------------------------------------------------------- what a run needs


def _key_needs(cfg: RunConfig) -> list[_Need]:
    needs = []
    judge = cfg.judge
    if not judge.mock and not os.environ.get(judge.api_key_env):
        needs.append(_Need(f"judge.api_key_env: the environment variable {judge.api_key_env} is not set", None, "run",
                           f"export {judge.api_key_env}=… (keys are read from the environment only, never written to disk)"))
    env = getattr(cfg.model, "api_key_env", None)
    if env and not os.environ.get(env):
        needs.append(_Need(f"model.api_key_env: the environment variable {env} is not set", None, "run",
                           f"export {env}=…"))
    return needs


def _task_needs(cfg: RunConfig, specs: dict[str, TaskSpec]) -> list[_Need]:
    """Per task, its files that are not cached (one line per server they come from), and its dataset if not prepared."""
    needs = []
    for name, spec in specs.items():
        absent = [ref for ref in task_file_refs(spec, cfg.variant) if not is_cached(ref, cfg.asset_mirrors)]
        local = [ref for ref in absent if ref.url is None or mirrored(ref.url, cfg.asset_mirrors) is not None]
        for ref in local:
            where = ref.path or mirrored(ref.url or "", cfg.asset_mirrors)
            needs.append(_Need(f"{ref.label}: {where} not found", None, "data",
                               "give the file there, or change the path in the task file or task_options"))
        by_server: dict[str, list[FileRef]] = {}
        for ref in absent:
            if ref not in local:
                by_server.setdefault(server_of(ref.url or ""), []).append(ref)
        for server, refs in by_server.items():
            needs.append(_Need(f"task {name}: {_files_text(name, refs)} not in the cache ({cache_root() / 'assets'})",
                               server, "data"))
        data = spec.variant(cfg.variant).data
        if data.format == "hf" and not hf_is_cached(data.dataset or "", data.config):
            needs.append(_Need(f"task {name}: dataset {data.dataset} ({data.config or 'default'}/{data.split}) not in the "
                               f"datasets cache ({hf_datasets_cache()})", hub_endpoint(), "data"))
    return needs


def _files_text(task: str, refs: list[FileRef]) -> str:
    names = [ref.label.removeprefix(f"task {task}: ").split(" [", 1)[0] for ref in refs]
    return ("file " if len(names) == 1 else f"{len(names)} files ") + f"({', '.join(names)})"


def _hub_model(cfg: RunConfig) -> bool:
    """The model is a hub repository (not a builtin model, a folder, a server or a replayed file)."""
    path = cfg.model.path
    return cfg.model.backend in ("hf", "vllm") and not is_builtin(path) and not Path(path).expanduser().exists()


def _model_needs(cfg: RunConfig, purpose: Purpose) -> list[_Need]:
    model = cfg.model
    if not _hub_model(cfg):
        return []
    if model.path.startswith((".", "/", "~")):  # a folder, as backends/template.py reads it, not a hub id
        return [_Need(f"model.path: {model.path} does not exist", None, "tokenizer", "give the model's folder, or its hub id")]
    needs = []
    if model.backend == "vllm" and purpose != "estimate" and importlib.util.find_spec("vllm") is None:
        needs.append(_Need("vLLM: model.backend is vllm and vllm is not installed", None, "run",
                           "pip install '.[vllm]' (on the GPU machine), or use backend: hf"))
    revision = getattr(model, "revision", None)
    if not _hub_cached(model.path, revision, "tokenizer_config.json"):
        needs.append(_Need(f"tokenizer of {model.path}: not in the Hugging Face cache ({_hub_cache()})", hub_endpoint(),
                           "tokenizer"))
    if purpose != "estimate" and not _weights_cached(model.path, revision):
        needs.append(_Need(f"model weights of {model.path}: not in the Hugging Face cache ({_hub_cache()})", hub_endpoint(),
                           "run"))
    return needs


def _uses_hub(cfg: RunConfig, specs: dict[str, TaskSpec]) -> bool:
    data = [spec.variant(cfg.variant).data for spec in specs.values()]
    return _hub_model(cfg) or any(d.format == "hf" and not Path(d.dataset or "").is_dir() for d in data)


def _hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hub_cached(repo: str, revision: str | None, filename: str) -> str | None:
    """The cached path of a file of a hub repository at `revision`, or None (no network: the cache's own index)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, filename, revision=revision)
    except ValueError:  # not a valid repository id: the tokenizer load will say so
        return None
    return found if isinstance(found, str) else None


def _weights_cached(repo: str, revision: str | None) -> bool:
    """A single weights file, or an index whose every shard is cached (safetensors, else PyTorch's .bin)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if _hub_cached(repo, revision, single):
            return True
        if (listed := _hub_cached(repo, revision, index)) is not None:
            try:
                shards = set(json.loads(Path(listed).read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError):
                return False
            return all(_hub_cached(repo, revision, shard) for shard in shards)
    return False


def _caches_for(need: _Need) -> str:
    if need.url and server_of(need.url) == hub_endpoint():
        return os.environ.get("HF_HOME", "~/.cache/huggingface")
    return str(cache_root())


# ---------------------------------------------------------------- is a server there?


def server_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an answer: the server is there
        return None


def unreachable(servers: Iterable[str], deadline_s: float = PROBE_DEADLINE_S) -> dict[str, str]:
    """The servers (scheme://host[:port]) that gave no HTTP answer within `deadline_s`, all asked at once, with why.

    One HEAD request each, through the environment's proxies as the downloads go; any HTTP status is an answer.
    A thread per server bounds the wait even where name resolution hangs (a socket timeout does not cover it)."""
    opener = urllib.request.build_opener(_NoRedirect())
    failures: dict[str, str] = {}
    answered: set[str] = set()
    lock = threading.Lock()

    def probe(server: str) -> None:
        try:
            opener.open(urllib.request.Request(server + "/", method="HEAD", headers={"User-Agent": "llmjp-eval"}),
                        timeout=deadline_s).close()
        except urllib.error.HTTPError:
            pass
        except (urllib.error.URLError, OSError, ValueError) as e:
            with lock:
                failures[server] = str(getattr(e, "reason", e)).splitlines()[0][:160]
            return
        with lock:
            answered.add(server)

    threads = [threading.Thread(target=probe, args=(server,), daemon=True) for server in sorted(set(servers))]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline_s + 0.5
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    with lock:
        return {server: failures.get(server, f"no answer within {deadline_s:g} s")
                for server in sorted(set(servers)) if server not in answered}
