"""transformers backend: the prompt rendered by the tokenizer's own chat template, batched `generate`.

Engines (`model.engine`; `auto` picks one per call, see `hf_engines.choose_engine`):
- `static`: static KV cache, decode step compiled on CUDA, batches of similar prompt length sized from the memory
  the allocator can give and the model's KV bytes per token; a CUDA OOM halves the batch and retries. Long budgets
  run in rounds of growing length (`hf_engines.STATIC_FIRST_SEGMENT`): a round's cache holds prompt + output so far
  + the round's new tokens, and a row still going after a round runs on in the next with its context re-read.
  `auto` picks it for short budgets.
- `paged`: transformers' continuous batching (paged KV cache): a finished row is replaced at once and its answer
  stored at once; cache sized from free GPU memory and `memory_fraction`, compiled with `compile: on`. `auto` picks
  it on CUDA for long (thinking) budgets. Sampling there uses one seeded RNG for the whole run, so a sampled output depends on
  the batch composition.
- `dynamic`: plain `generate` with a dynamic cache — the naive baseline of the benchmark.
Sampling in `static`/`dynamic` goes through `RowSampler`, so each output depends only on its request's seed.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..chat import parse_output
from ..compat import UPSTREAM, Profile
from ..config import GenerationConfig as RunGenerationConfig
from ..config import HFModel
from ..errors import UserError
from ..failpoints import checkpoint
from .base import GenerationRequest, GenerationResult, OnResult, error_result
from .hf_engines import (
    STATIC_FIRST_SEGMENT,
    auto_batch_size,
    cache_budget,
    choose_engine,
    continuous_batching_config,
    kv_bytes_per_token,
    release_cached_memory,
)
from .template import RendersLocally

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel

    class CausalLM(PreTrainedModel, GenerationMixin):
        """What `AutoModelForCausalLM` loads (typed as Any by transformers): a model that generates."""

PROMPT_BUCKET = 64  # prompts are left-padded to a multiple of this, which bounds the shapes torch.compile sees


class HFBackend(RendersLocally):
    name = "hf"
    cfg: HFModel
    first_segment: int | None = STATIC_FIRST_SEGMENT  # the static engine's first round; None: one round to the budget

    def __init__(self, cfg: HFModel, generation: RunGenerationConfig, profile: Profile = UPSTREAM):
        super().__init__(cfg, profile)
        self.generation = generation
        self.tokenizer = self.chat.tokenizer
        self.model: CausalLM | None = None  # loaded by the first generate call
        self.device = "cpu"
        self.engine: str = cfg.engine  # resolved per call once the device and the budgets are known
        self.max_batch: int | None = None  # lowered after an out-of-memory error, so it is not hit again
        self.stop = threading.Event()  # the run's stop event, given with each call

    # ---------------------------------------------------------------- protocol

    def close(self) -> None:
        self.model = None

    # ---------------------------------------------------------------- loading

    def _load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM

        self.device = self.cfg.device if self.cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "auto" if self.cfg.dtype == "auto" else getattr(torch, self.cfg.dtype)
        kwargs: dict[str, Any] = {"revision": self.cfg.revision, "dtype": dtype, "trust_remote_code": self.cfg.trust_remote_code}
        if self.cfg.attn_implementation:
            kwargs["attn_implementation"] = self.cfg.attn_implementation
        if self.device.startswith("cuda"):
            kwargs["device_map"] = self.device
        print(f"model: loading the weights of {self.cfg.path} ({self.cfg.dtype}) onto {self.device}…", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            model = AutoModelForCausalLM.from_pretrained(self.chat.path, **kwargs)
        except (OSError, ValueError) as e:
            raise UserError(f"model.path: cannot load model weights from {self.chat.path!r} ({str(e).splitlines()[0]})") from None
        # (transformers types `to` through functools.wraps, which loses its `self`)
        model = model.to(self.device).eval()  # type: ignore[arg-type]
        self.model = model
        print(f"model: loaded in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        checkpoint("model_loaded")
        self.dtype_bytes = next(model.parameters()).element_size()
        self.stop_rule = self.chat.stop_rule(getattr(model.generation_config, "eos_token_id", None))
        self.eos_ids = sorted(self.stop_rule.eos_ids)

    # ---------------------------------------------------------------- generation

    def generate(self, requests: list[GenerationRequest], on_result: OnResult, stop: threading.Event | None = None) -> None:
        if not requests:
            return
        if any(r.sampling.frequency_penalty for r in requests):
            raise UserError("generation.frequency_penalty: the hf backend samples without a frequency penalty; "
                            "set it to 0 (or null) in the task, or use the vllm or openai backend")
        self.generate_encoded([(request, *self.chat.encode(request.messages)) for request in requests], on_result, stop)

    def generate_encoded(self, encoded: list, on_result: OnResult, stop: threading.Event | None = None) -> None:
        """Generate from already rendered prompts: (request, token ids, prompt hash) triples. Once `stop` is set,
        the batch in flight ends at its next step (paged: within 0.1 s) and is dropped, and nothing new starts."""
        self._load()
        assert self.model is not None
        self.stop = stop or threading.Event()
        encoded.sort(key=lambda e: -len(e[1]))  # longest first: similar lengths batch together, OOM shows early
        self.engine = choose_engine(self.cfg.engine, self.device, max(r.sampling.max_new_tokens for r, _, _ in encoded))
        if self.engine == "paged":
            self._generate_paged(encoded, on_result)
            return
        rows = [Row(request, ids, prompt_hash) for request, ids, prompt_hash in encoded]
        segment = self.first_segment if self.engine == "static" else None
        # transformers gives every static cache the longest length any earlier `generate` used, so that a compiled
        # step is reused. Within this call that is one length per round (batches run longest first, rounds grow);
        # a new call must start from its own first round, not from the last round of the call before.
        self.model.__dict__.pop("_previous_max_cache_length", None)
        while rows and not self.stop.is_set():
            rows = self._generate_round(rows, segment, on_result)
            segment = segment and segment * 2

    def _generate_round(self, rows: list[Row], segment: int | None, on_result: OnResult) -> list[Row]:
        """Every row runs on by up to `segment` new tokens (None: to its budget), in batches of similar length; a row
        that finishes is handed to `on_result`, the rows that are still going are returned."""
        rows.sort(key=lambda row: -len(row.context))
        going: list[Row] = []
        start = 0
        while start < len(rows) and not self.stop.is_set():
            size = self._batch_size(rows[start:], segment)
            going += self._run_with_fallback(rows[start:start + size], segment, on_result)
            release_cached_memory(self.device)
            start += size
        return going

    def _batch_size(self, remaining: list[Row], segment: int | None) -> int:
        if self.generation.batch_size != "auto":
            size = int(self.generation.batch_size)
        else:
            longest = _bucket(len(remaining[0].context)) + _new_tokens(remaining, segment)
            cap = 256 if self.device.startswith("cuda") else 32
            assert self.model is not None
            size = auto_batch_size(cache_budget(self.device, self.cfg.memory_fraction),
                                   kv_bytes_per_token(self.model.config, self.dtype_bytes), longest,
                                   self.model.config.get_text_config().vocab_size, cap)
        return min(size, self.max_batch or size)

    def _run_with_fallback(self, batch: list[Row], segment: int | None, on_result: OnResult) -> list[Row]:
        import torch

        try:
            self._run_batch(batch, segment)
            if self.stop.is_set():
                return []  # cut short: what each row wrote stops mid-way
        except torch.OutOfMemoryError:
            release_cached_memory(self.device)
            if len(batch) == 1:
                row = batch[0]
                on_result(error_result(row.request, f"out of memory for one sequence of {len(row.context)} tokens + "
                                                    f"{_new_tokens(batch, segment)} new; lower generation.max_new_tokens"))
                return []
            half = len(batch) // 2
            self.max_batch = min(self.max_batch or half, half)
            return (self._run_with_fallback(batch[:half], segment, on_result)
                    + self._run_with_fallback(batch[half:], segment, on_result))
        going = []
        for row in batch:
            if self._finished(row):
                on_result(self._result(row.request, row.prompt_ids, row.generated, row.prompt_hash, row.seconds))
            else:
                going.append(row)
        return going

    def _finished(self, row: Row) -> bool:
        return row.remaining <= 0 or self.stop_rule.length(row.generated) is not None

    def _run_batch(self, batch: list[Row], segment: int | None) -> None:
        """One `generate` call; each row's new tokens (its budget's worth at most) are appended to `row.generated`."""
        import torch
        from transformers import GenerationConfig

        started = time.perf_counter()
        width = _bucket(max(len(row.context) for row in batch))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            context = row.context
            input_ids[i, width - len(context):] = torch.tensor(context)
            attention[i, width - len(context):] = 1
        config = GenerationConfig(do_sample=False, max_new_tokens=_new_tokens(batch, segment), eos_token_id=self.eos_ids,
                                  pad_token_id=pad)
        if self.engine == "static":
            config.cache_implementation = "static"
        if self.cfg.compile == "off" or (self.cfg.compile == "auto" and not self.device.startswith("cuda")):
            config.disable_compile = True
        assert self.model is not None
        with torch.inference_mode():
            output = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                         generation_config=config, logits_processor=self._processors(batch, width),
                                         stopping_criteria=self._stops(batch))
        generated = output[:, width:].tolist()
        seconds = (time.perf_counter() - started) / len(batch)
        for row, tokens in zip(batch, generated, strict=True):
            # A row with a smaller budget than its batch-mates keeps only its own; after a stop token comes padding.
            row.generated = row.generated + tokens[:row.remaining]
            row.seconds += seconds

    def _processors(self, batch: list[Row], prompt_width: int):
        from transformers import LogitsProcessorList

        from .hf_decode import RowSampler

        sampling = [row.request.sampling for row in batch]
        return LogitsProcessorList([RowSampler([s.temperature for s in sampling], [s.top_p for s in sampling],
                                               [row.request.seed for row in batch], prompt_width, self.device,
                                               [len(row.generated) for row in batch])])

    def _stops(self, batch: list[Row]):
        from transformers import StoppingCriteriaList

        from .hf_decode import FinalMessageStop, WhenSet

        stops = StoppingCriteriaList([WhenSet(self.stop)])
        if self.stop_rule.final_header:
            assert self.stop_rule.end_id is not None  # a rule with a final message has its end
            stops.append(FinalMessageStop(self.stop_rule.final_header, self.stop_rule.end_id,
                                          [self.stop_rule.entered_final(row.generated) for row in batch], self.device))
        return stops

    def _result(self, request: GenerationRequest, prompt_ids: list[int], tokens: list[int], prompt_hash: str,
                seconds: float) -> GenerationResult:
        limit = request.sampling.max_new_tokens
        tokens = tokens[:limit]  # rows of a batch with a larger limit keep only their own budget
        end = self.stop_rule.length(tokens)  # what follows the stop token is padding (or a batch-mate's longer run)
        if end is not None:
            tokens = tokens[:end]
        hit_limit = end is None and len(tokens) >= limit
        raw = self.chat.decode(tokens)
        parsed = parse_output(raw, hit_limit, self.chat.reasoning, self.chat.special_tokens)
        finish = "length" if hit_limit else "stop"
        return GenerationResult(request, raw, parsed, finish, len(prompt_ids), len(tokens), seconds, prompt_hash)

    def _generate_paged(self, encoded: list, on_result: OnResult) -> None:
        """Continuous batching: one manager per (temperature, top_p); each request keeps its own token budget and is
        handed to `on_result` (stored) the moment it finishes.

        The manager knows only stop tokens, so `<|end|>` is one: a request that closed a message other than the final
        one is resubmitted at once with its output appended (and the rest of its budget); one that closed the final
        message is done."""
        from transformers import GenerationConfig

        stop_ids = self.eos_ids + ([self.stop_rule.end_id] if self.stop_rule.final_header else [])
        groups: dict[tuple, list] = {}
        for entry in encoded:
            s = entry[0].sampling
            groups.setdefault((s.temperature, s.top_p), []).append(entry)
        for (temperature, top_p), group in groups.items():
            if self.stop.is_set():
                return
            config = GenerationConfig(do_sample=temperature > 0, temperature=temperature or None, top_p=top_p,
                                      max_new_tokens=max(r.sampling.max_new_tokens for r, _, _ in group),
                                      eos_token_id=stop_ids, pad_token_id=self.tokenizer.pad_token_id)
            batching = self._continuous_batching_config(group)
            batching.seed = min(r.seed for r, _, _ in group)
            release_cached_memory(self.device)
            assert self.model is not None
            with self.model.continuous_batching_context_manager(
                    generation_config=config, continuous_batching_config=batching, block=True,
                    warmup=self.device.startswith("cuda")) as manager:
                try:
                    self._collect_paged(manager, group, on_result)
                except BaseException:
                    manager.stop(block=True, hard_stop=True)  # leaving the block would first finish every request
                    raise
                if self.stop.is_set():
                    manager.stop(block=True, hard_stop=True)  # the requests left are dropped, not run to their end
            release_cached_memory(self.device)

    def _continuous_batching_config(self, group: list):
        rows = None if self.generation.batch_size == "auto" else int(self.generation.batch_size)
        assert self.model is not None
        return continuous_batching_config(self.device, self.cfg.memory_fraction, self.cfg.compile,
                                          kv_bytes_per_token(self.model.config, self.dtype_bytes),
                                          [len(ids) + r.sampling.max_new_tokens for r, ids, _ in group], rows)

    def _collect_paged(self, manager, group: list, on_result: OnResult) -> None:
        started = time.perf_counter()
        waiting: dict[str, tuple] = {}

        def submit(request: GenerationRequest, ids: list[int], prompt_hash: str, generated: list[int]) -> None:
            budget = request.sampling.max_new_tokens - len(generated)
            waiting[manager.add_request(ids + generated, max_new_tokens=budget)] = (request, ids, prompt_hash, generated)

        for request, ids, prompt_hash in group:
            submit(request, ids, prompt_hash, [])
        done = 0
        while waiting and not self.stop.is_set():
            out = manager.get_result(timeout=0.1)  # a stop is noticed within this
            if out is None:
                if not manager.is_running():
                    raise RuntimeError("transformers continuous batching stopped before finishing")
                continue
            if out.request_id not in waiting or not out.is_finished():
                continue
            request, ids, prompt_hash, generated = waiting.pop(out.request_id)
            tokens = generated + list(out.generated_tokens)
            if not out.error and self.stop_rule.message_closed(tokens) and len(tokens) < request.sampling.max_new_tokens:
                submit(request, ids, prompt_hash, tokens)
                continue
            done += 1
            elapsed = (time.perf_counter() - started) / done
            if out.error:
                on_result(error_result(request, f"continuous batching: {out.error}"))
            else:
                on_result(self._result(request, ids, tokens, prompt_hash, elapsed))


@dataclass
class Row:
    """A request in the static and dynamic engines: its prompt and what it has generated in earlier rounds."""

    request: GenerationRequest
    prompt_ids: list[int]
    prompt_hash: str
    generated: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def context(self) -> list[int]:
        return self.prompt_ids + self.generated

    @property
    def remaining(self) -> int:
        return self.request.sampling.max_new_tokens - len(self.generated)


def _new_tokens(rows: list[Row], segment: int | None) -> int:
    """New tokens a `generate` call over `rows` runs for: the largest remaining budget, at most one segment."""
    most = max(row.remaining for row in rows)
    return min(most, segment) if segment else most


def _bucket(length: int) -> int:
    return -(-length // PROMPT_BUCKET) * PROMPT_BUCKET
