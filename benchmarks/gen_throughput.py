"""Generation throughput: one engine of the hf backend against naive `generate()` on the same rows, batch size and order.

A random-weight model of a named shape (no network) and N prompts of 100–400 random tokens. Each row's output length
is drawn in advance and enforced by a scripted stop that plays the model's end of message: naive `generate()` and the
`static`/`dynamic` engines stop a row when it reaches its length (a per-row stopping criterion, logits untouched), the
`paged` engine gets that length as the request's token budget. The model's own end-of-sequence is disabled, so every
path does the same work and greedy outputs must agree token for token.

Workloads:
- `thinking`: a thinking model's output lengths — log-normal, median ~1.5 k, capped at the 16 k budget, plus a share
  of rows that run to the budget (the real job: 3 168 generations per row of the model card).
- `short`: answers without thinking (median ~700, cap 4 096).

The baseline is naive `generate()` (dynamic cache, no compile) in batches of the same size and in the same order as
the engine. `--naive-seconds` stops it after that long: its rate over the first batches is an upper bound of its
full-run rate (finished rows idle until the batch ends), so the speed-up printed is then a lower bound. The floor is
the HBM time of an ideal engine that keeps `batch` rows busy: each step reads all weights plus every live row's KV
cache, at the device-to-device copy bandwidth measured here (null on CPU). The last line is one JSON object.

A real model folder (`--model PATH`: a local `save_pretrained` folder, or a hub id already in the cache) replaces the
random shape: its own weights, dtype and positions, prompts of random ordinary tokens of its own tokenizer (no
special token), padding with its own pad (or eos) token. Its end-of-sequence tokens are listed in the JSON and
disabled like the random model's, so every row still runs to its drawn length and the comparison stays exact.

    python benchmarks/gen_throughput.py --workload thinking --engine paged                   # CPU dry run, tiny shape
    python benchmarks/gen_throughput.py --model /models/llm-jp-4-8b-thinking --engine paged --batch 64   # your weights
    python benchmarks/gen_throughput.py --workload thinking --shape llm-jp-4-8b --engine paged --batch 64 \\
        --budget 4096 --median 1024 --n 96 --naive-seconds 20                                 # one H100 / H200
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    StoppingCriteria,
    StoppingCriteriaList,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eval.backends.base import GenerationRequest, Sampling  # noqa: E402
from eval.backends.hf import HFBackend  # noqa: E402
from eval.backends.hf_engines import kv_bytes_per_token  # noqa: E402
from eval.backends.template import StopRule  # noqa: E402
from eval.chat import ParsedOutput  # noqa: E402
from eval.config import GenerationConfig, HFModel, ReasoningFormat  # noqa: E402
from eval.records import Slot  # noqa: E402

SHAPES = {
    # llm-jp-4-8b: 32 layers, 32 KV heads of 128 → 0.5 MiB of bf16 KV cache per token.
    "llm-jp-4-8b": {"vocab_size": 196608, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 32,
                    "num_attention_heads": 32, "num_key_value_heads": 32, "tie_word_embeddings": False},
    "tiny": {"vocab_size": 4096, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4, "tie_word_embeddings": False},
}


@dataclass(frozen=True)
class Workload:
    median: int
    budget: int
    sigma: float
    at_budget: float  # share of rows that run to the budget


EFFORT_LEVEL_GENERATIONS = 3168  # one row of the model card: (80 × 2 × 2 + 336 + 400) items × 3 rounds
WORKLOADS = {"thinking": Workload(1536, 16384, 1.0, 0.02), "short": Workload(700, 4096, 0.8, 0.0)}
TINY_WORKLOADS = {"thinking": Workload(48, 256, 1.0, 0.05), "short": Workload(32, 96, 0.8, 0.0)}


def draw(n: int, vocab: int | list[int], work: Workload, seed: int) -> tuple[list[list[int]], list[int]]:
    """Prompts of random token ids (`vocab`: a size, ids 10 … size − 10, or the list of ids to draw from) and each
    row's output length."""
    gen = torch.Generator().manual_seed(seed)
    prompt_lens = torch.randint(100, 401, (n,), generator=gen).tolist()
    if isinstance(vocab, int):
        prompts = [torch.randint(10, vocab - 10, (length,), generator=gen).tolist() for length in prompt_lens]
    else:
        ids = torch.tensor(vocab)
        prompts = [ids[torch.randint(0, len(ids), (length,), generator=gen)].tolist() for length in prompt_lens]
    normal = torch.randn(n, generator=gen).tolist()
    to_budget = (torch.rand(n, generator=gen) < work.at_budget).tolist()
    targets = [work.budget if full else max(16, min(work.budget, int(math.exp(math.log(work.median) + work.sigma * z))))
               for z, full in zip(normal, to_budget, strict=True)]
    return prompts, targets


class RowLengthStop(StoppingCriteria):
    """The scripted end of message: a row stops once it has produced its drawn number of tokens."""

    def __init__(self, targets: list[int], prompt_width: int):
        self.targets = torch.tensor(targets)
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores, **kwargs):
        produced = input_ids.shape[1] - self.prompt_width
        return self.targets.to(input_ids.device) <= produced


class Deadline(StoppingCriteria):
    """Stops every row once the wall clock passes `at` (a time-boxed baseline)."""

    def __init__(self, at: float | None):
        self.at = at
        self.hit = False

    def __call__(self, input_ids, scores, **kwargs):
        self.hit = self.at is not None and time.perf_counter() >= self.at
        return torch.full((input_ids.shape[0],), self.hit, dtype=torch.bool, device=input_ids.device)


def in_backend_order(prompts: list[list[int]]) -> list[int]:
    """Row indices in the order `HFBackend.generate_encoded` runs them (longest prompt first, stable)."""
    return sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))


def run_naive(model, prompts, targets, order, batch: int, device: str, seconds: float | None,
              pad_id: int = 0) -> tuple[dict, float, bool]:
    """Plain `generate()`: dynamic cache, left padding, batches of `batch` rows in `order`. Returns each row's tokens
    (what it produced before the deadline, if one was hit), the seconds and whether the deadline cut it short."""
    outputs: dict[int, list[int]] = {}
    started = time.perf_counter()
    deadline = Deadline(started + seconds if seconds else None)
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        goal = [targets[i] for i in rows]
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max(goal), eos_token_id=never_produced(model), pad_token_id=pad_id,
                                 stopping_criteria=StoppingCriteriaList([RowLengthStop(goal, width), deadline]))
        new = out[:, width:].tolist()
        for r, i in enumerate(rows):
            outputs[i] = new[r][:goal[r]]
        if deadline.hit:
            break
    synchronize(device)
    return outputs, time.perf_counter() - started, deadline.hit


class BenchBackend(HFBackend):
    """The real backend path (`generate_encoded`, batching, engine) with the workload's scripted stop. Requests carry
    the real budget, which the static engine allocates and sizes its batches for; batched engines stop each row at its
    drawn length with `RowLengthStop`, the paged engine (which reserves nothing ahead) gets the drawn length as the
    request's budget, since transformers' continuous batching takes no stopping criteria."""

    def __init__(self, model, device: str, engine: str, batch, targets: list[int], seconds: float | None = None,
                 compile_mode: str = "auto", first_segment: int | None = HFBackend.first_segment, pad_id: int = 0):
        self.cfg = HFModel(backend="hf", path="bench", engine=engine, device=device, compile=compile_mode,
                           reasoning=ReasoningFormat(format="none"))
        self.generation = GenerationConfig(batch_size=batch)
        self.tokenizer = SimpleNamespace(pad_token_id=pad_id)
        self.chat = None
        self.model, self.device, self.engine, self.max_batch = model, device, engine, None
        self.dtype_bytes = next(model.parameters()).element_size()
        self.eos_ids = [never_produced(model)]  # rows end by the scripted stop alone
        self.stop_rule = StopRule(frozenset(self.eos_ids))
        self.first_segment = first_segment
        self.targets = targets
        self.deadline = Deadline(None)
        self.seconds = seconds
        self.batches: list[int] = []
        self.rounds: dict[int | None, int] = {}  # static engine: rows run per round, by the round's new-token segment
        self.outputs: dict[int, list[int]] = {}

    def generate_encoded(self, encoded, on_result):
        self.deadline = Deadline(time.perf_counter() + self.seconds if self.seconds else None)
        super().generate_encoded(encoded, on_result)

    def _run_with_fallback(self, batch, segment, on_result):
        if self.deadline.hit:  # time-boxed: a row cut short or not run counts with what it has produced
            for row in batch:
                self.outputs[row.request.seed] = row.generated[:self.targets[row.request.seed]]
            return []
        self.rounds[segment] = self.rounds.get(segment, 0) + len(batch)
        return super()._run_with_fallback(batch, segment, on_result)

    def _processors(self, batch, prompt_width):
        self.batches.append(len(batch))
        self.scripted = RowLengthStop([self.targets[row.request.seed] - len(row.generated) for row in batch], prompt_width)
        return super()._processors(batch, prompt_width)

    def _stops(self, batch):
        return StoppingCriteriaList([self.scripted, self.deadline])

    def _finished(self, row):
        return len(row.generated) >= self.targets[row.request.seed]  # what follows the scripted stop is padding

    def _collect_paged(self, manager, group, on_result):
        if self.deadline.at is None:
            return super()._collect_paged(manager, group, on_result)

        def time_up():
            self.deadline.hit = True
            manager.stop(block=False, hard_stop=True)

        timer = threading.Timer(max(0.0, self.deadline.at - time.perf_counter()), time_up)
        timer.start()
        try:
            super()._collect_paged(manager, group, on_result)
        except RuntimeError:
            if not self.deadline.hit:
                raise
        finally:
            timer.cancel()

    def _generate_paged(self, encoded, on_result):
        scripted = [(GenerationRequest(r.slot, r.messages, Sampling(0.0, None, self.targets[r.seed]), r.seed), ids, h)
                    for r, ids, h in encoded]
        super()._generate_paged(scripted, on_result)

    def _result(self, request, prompt_ids, tokens, prompt_hash, seconds):
        tokens = tokens[:self.targets[request.seed]]
        self.outputs[request.seed] = tokens
        return SimpleNamespace(request=request, tokens_out=len(tokens), parsed=ParsedOutput(None, "", "ok"))


def run_backend(model, prompts, targets, budget: int, engine: str, batch, device: str, seconds: float | None,
                compile_mode: str, first_segment: int | None, pad_id: int = 0) -> tuple[BenchBackend, float]:
    backend = BenchBackend(model, device, engine, batch, targets, seconds, compile_mode, first_segment, pad_id)
    requests = [GenerationRequest(Slot(1, "bench", str(i), 1), [], Sampling(0.0, None, budget), i) for i in range(len(targets))]
    started = time.perf_counter()
    backend.generate_encoded([(r, prompts[i], "") for i, r in enumerate(requests)], lambda r: None)
    synchronize(device)
    elapsed = time.perf_counter() - started
    return backend, min(elapsed, seconds) if backend.deadline.hit else elapsed


def never_produced(model) -> int:
    """An end-of-sequence id outside the output vocabulary: generation never stops by itself."""
    return model.get_output_embeddings().weight.shape[0]


@dataclass
class Subject:
    """What is measured: a model, the token ids its prompts are drawn from, its pad id and eos ids."""

    name: str
    model: torch.nn.Module
    vocab: int | list[int]
    pad_id: int
    eos_ids: list[int]


def random_shape(shape: str, work: Workload, dtype: torch.dtype, device: str) -> Subject:
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=max(8192, 512 + work.budget), pad_token_id=0,
                         eos_token_id=1)
    torch.set_default_dtype(dtype)  # built in its dtype: an 8 B model in float32 first would take twice the memory
    with torch.device(device):
        model = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    return Subject(shape, model, config.vocab_size, 0, [1])


def model_folder(path: str, work: Workload, dtype: torch.dtype, device: str) -> Subject:
    """A real model: its weights in `dtype`, prompts from its tokenizer's ordinary tokens, its own pad and eos."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and positions < 400 + work.budget:
        sys.exit(f"--model {path}: {positions} positions cannot hold a 400-token prompt plus the {work.budget}-token "
                 "budget; give a smaller --budget")
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(min(len(tokenizer), model.get_output_embeddings().weight.shape[0])) if i not in special]
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tokenizer.eos_token_id
    eos_ids = sorted({eos} if isinstance(eos, int) else set(eos or ()))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [0])[0]
    return Subject(path.rstrip("/").rsplit("/", 1)[-1], model, ordinary, pad, eos_ids)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(device: str) -> float | None:
    """Bytes per second of a large device-to-device copy, counting bytes read plus written."""
    if not device.startswith("cuda"):
        return None
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        dst.copy_(src)
        end.record()
        synchronize(device)
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * (1 << 30) / sorted(times)[len(times) // 2]


def floor_tok_s(weight_bytes: int, kv_per_token: int, prompt_lens: list[int], targets: list[int], batch: int,
                bandwidth: float | None) -> float | None:
    """Tokens per second of an engine bound only by HBM reads, with `batch` rows busy on every step: each step reads
    all weights once, and each generated token reads its row's KV cache (prompt plus tokens so far)."""
    if bandwidth is None:
        return None
    tokens = sum(targets)
    steps = tokens / batch
    kv_tokens_read = sum(p * t + t * (t - 1) / 2 for p, t in zip(prompt_lens, targets, strict=True))
    return tokens * bandwidth / (steps * weight_bytes + kv_tokens_read * kv_per_token)


def compare(reference: dict[int, list[int]], other: dict[int, list[int]]) -> dict:
    """Greedy outputs row by row, over the tokens both produced (a time-boxed run holds prefixes)."""
    rows = [i for i in reference if reference[i] and other.get(i)]
    shared = {i: min(len(reference[i]), len(other[i])) for i in rows}
    agreeing = {i: next((k for k in range(shared[i]) if reference[i][k] != other[i][k]), shared[i]) for i in rows}
    return {"rows_compared": len(rows), "rows_equal": sum(agreeing[i] == shared[i] for i in rows),
            "tokens_compared": sum(shared.values()), "tokens_before_first_difference": sum(agreeing.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="thinking")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="a random-weight model of this shape")
    parser.add_argument("--model", help="a real model instead: a local folder (or a cached hub id) with its tokenizer")
    parser.add_argument("--engine", choices=["static", "paged", "dynamic"], default="paged")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="the engine's model.compile")
    parser.add_argument("--batch", default="16", help="rows per step, for the engine and the naive baseline alike "
                                                      "('auto': the engine sizes itself; naive then uses --naive-batch)")
    parser.add_argument("--naive-batch", type=int, default=16, help="naive batch when --batch is auto")
    parser.add_argument("--n", type=int, default=24, help="rows")
    parser.add_argument("--budget", type=int, help="token budget (default: the workload's; tiny shape: a tiny one)")
    parser.add_argument("--median", type=int, help="median output length (default: the workload's)")
    parser.add_argument("--naive-seconds", type=float, help="stop the naive baseline after this long (time box)")
    parser.add_argument("--engine-seconds", type=float,
                        help="stop the engine after this long (paged: only rows finished by then count)")
    parser.add_argument("--first-segment", type=int,
                        help="static engine: new tokens of its first round (default: the engine's, 1 024; tiny shape: "
                             "16); 0 runs every row to the budget in one round, as before rounds existed")
    parser.add_argument("--skip-naive", action="store_true", help="engine only (naive fields null)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared CPU, more threads spin and run many times slower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", help="a name for this case, echoed in the JSON")
    args = parser.parse_args()
    device = args.device
    if not device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    tiny = args.shape == "tiny" and not args.model
    work = (TINY_WORKLOADS if tiny else WORKLOADS)[args.workload]
    work = Workload(args.median or work.median, args.budget or work.budget, work.sigma, work.at_budget)
    batch = args.batch if args.batch == "auto" else int(args.batch)
    naive_batch = args.naive_batch if batch == "auto" else batch
    first_segment = args.first_segment if args.first_segment is not None else (16 if tiny else None)
    first_segment = HFBackend.first_segment if first_segment is None else first_segment or None

    torch.manual_seed(args.seed)
    built = time.perf_counter()
    subject = model_folder(args.model, work, dtype, device) if args.model else random_shape(args.shape, work, dtype, device)
    model, config = subject.model, subject.model.config
    synchronize(device)
    prompts, targets = draw(args.n, subject.vocab, work, args.seed)
    order = in_backend_order(prompts)
    print(f"{subject.name} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, {dtype}) on {device}, built in "
          f"{time.perf_counter() - built:.1f} s; {args.workload}: {args.n} rows, {sum(targets)} tokens, median "
          f"{sorted(targets)[len(targets) // 2]}, {sum(t == work.budget for t in targets)} at the {work.budget} budget",
          file=sys.stderr, flush=True)

    if device.startswith("cuda"):  # compile / CUDA-graph warm-up outside the timing
        warm = [min(t, 32) for t in targets[:8]]
        run_backend(model, prompts[:8], warm, work.budget, args.engine, batch, device, None, args.compile, first_segment,
                    subject.pad_id)
    backend, backend_s = run_backend(model, prompts, targets, work.budget, args.engine, batch, device,
                                     args.engine_seconds, args.compile, first_segment, subject.pad_id)
    backend_tokens = sum(len(t) for t in backend.outputs.values())
    if not args.engine_seconds:
        assert backend_tokens == sum(targets), "every row must produce exactly its drawn length"
    backend_tok_s = backend_tokens / backend_s
    print(f"engine {args.engine} (batch {args.batch}): {backend_tokens} tokens in {backend_s:.1f} s = {backend_tok_s:.0f} tok/s",
          file=sys.stderr, flush=True)

    naive_tok_s, check, naive_cut = None, None, False
    if not args.skip_naive:
        naive, naive_s, naive_cut = run_naive(model, prompts, targets, order, naive_batch, device, args.naive_seconds,
                                              subject.pad_id)
        naive_tokens = sum(len(t) for t in naive.values())
        naive_tok_s = naive_tokens / naive_s
        check = compare(naive, backend.outputs)
        print(f"naive generate() (batch {naive_batch}{', time-boxed' if naive_cut else ''}): {naive_tokens} tokens in "
              f"{naive_s:.1f} s = {naive_tok_s:.0f} tok/s; greedy rows equal: {check['rows_equal']}/{check['rows_compared']}",
              file=sys.stderr, flush=True)

    # One effort level of the model card: 3 168 generations with the full workload's lengths, at the rate measured here.
    effort_tokens = sum(draw(EFFORT_LEVEL_GENERATIONS, 1000, WORKLOADS[args.workload], args.seed)[1])  # lengths only
    bandwidth = copy_bandwidth(device)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = kv_bytes_per_token(config, torch.tensor([], dtype=dtype).element_size())
    rows_per_step = int(batch) if batch != "auto" else max(backend.batches or [args.n])
    floor = floor_tok_s(weight_bytes, kv, [len(p) for p in prompts], targets, min(rows_per_step, args.n), bandwidth)
    result = {
        "case": args.label,
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda")
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "shape": None if args.model else args.shape, "model": args.model, "eos_ids_disabled": subject.eos_ids,
        "dtype": str(dtype).removeprefix("torch."), "workload": args.workload,
        "engine": args.engine, "compile": args.compile, "first_segment": first_segment if args.engine == "static" else None, "batch": args.batch, "naive_batch": None if args.skip_naive else naive_batch,
        "n": args.n, "budget": work.budget, "output_tokens": sum(targets),
        "median_output": sorted(targets)[len(targets) // 2], "rows_at_budget": sum(t == work.budget for t in targets),
        "static_batches": backend.batches[:16] or None,
        "static_rounds": {str(k): v for k, v in backend.rounds.items()} or None, "engine_time_boxed": backend.deadline.hit,
        "naive_time_boxed": naive_cut, "naive_tok_s": round(naive_tok_s, 1) if naive_tok_s else None,
        "backend_tok_s": round(backend_tok_s, 1),
        "speedup": round(backend_tok_s / naive_tok_s, 2) if naive_tok_s else None,
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1) if bandwidth else None,
        "floor_tok_s": round(floor, 1) if floor else None,
        "floor_fraction": round(backend_tok_s / floor, 3) if floor else None,
        "effort_level_tokens": effort_tokens,
        "effort_level_minutes": round(effort_tokens / backend_tok_s / 60, 1) if backend_tok_s else None,
        "greedy_check": check,
    }
    print(json.dumps(result), flush=True)
    strict = dtype == torch.float32
    if strict and check and check["rows_equal"] != check["rows_compared"]:
        sys.exit("greedy outputs differ between the engine and naive generate() in float32")


if __name__ == "__main__":
    main()
