"""Generation throughput: the hf backend's engine against naive padded `generate()` on the same workload.

A random-weight model of a named shape (no network), N prompts of 100–400 random tokens, output lengths drawn from
a seeded log-normal (median ~700, capped) and enforced by a logits processor that ends each row at its target, so
every path does the same work. Prints tok/s of both paths, the speed-up, and the backend against the memory-bandwidth
floor (weight bytes + KV bytes read per decode step over the device-to-device copy bandwidth measured here; null on
CPU). The last line is one JSON object.

    python benchmarks/gen_throughput.py --shape tiny --n 32                         # CPU dry run
    python benchmarks/gen_throughput.py --shape llm-jp-4-8b --n 256 --naive-n 64     # one H100/H200
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eval.backends.base import GenerationRequest, Sampling  # noqa: E402
from eval.backends.hf import HFBackend, kv_bytes_per_token  # noqa: E402
from eval.chat import ParsedOutput  # noqa: E402
from eval.config import GenerationConfig, HFModel, ReasoningFormat  # noqa: E402
from eval.records import Slot  # noqa: E402

SHAPES = {
    "llm-jp-4-8b": dict(vocab_size=196608, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
    "tiny": dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
}


class ForceLength(LogitsProcessor):
    """End each row exactly at its target length: eos forbidden before, forced at the last step."""

    def __init__(self, targets: list[int], prompt_width: int, eos: int):
        self.targets = torch.tensor(targets)
        self.prompt_width = prompt_width
        self.eos = eos

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_width
        targets = self.targets.to(scores.device)
        scores[:, self.eos] = torch.finfo(scores.dtype).min
        last = targets - 1 == step
        scores[last] = torch.finfo(scores.dtype).min
        scores[last, self.eos] = 0
        return scores


def workload(n: int, vocab: int, median: int, cap: int, seed: int) -> tuple[list[list[int]], list[int]]:
    gen = torch.Generator().manual_seed(seed)
    prompt_lens = torch.randint(100, 401, (n,), generator=gen).tolist()
    prompts = [torch.randint(10, vocab - 10, (length,), generator=gen).tolist() for length in prompt_lens]
    normal = torch.randn(n, generator=gen)
    targets = [max(16, min(cap, int(math.exp(math.log(median) + 0.8 * z)))) for z in normal.tolist()]
    return prompts, targets


class BenchBackend(HFBackend):
    """The real backend path (`generate_encoded`, batching, engine) with the workload's length forcing added."""

    def __init__(self, model, device: str, engine: str, batch, eos: int, targets: dict[str, int]):
        self.cfg = HFModel(backend="hf", path="bench", engine=engine, device=device, reasoning=ReasoningFormat(format="none"))
        self.generation = GenerationConfig(max_new_tokens=max(targets.values()), batch_size=batch)
        self.tokenizer = SimpleNamespace(pad_token_id=0)
        self.chat = None
        self.model, self.device, self.engine, self.max_batch = model, device, engine, None
        self.dtype_bytes = next(model.parameters()).element_size()
        self.eos_ids = [eos]
        self.targets = targets
        self.batches: list[int] = []

    def _processors(self, requests, prompt_width):
        self.batches.append(len(requests))
        out = super()._processors(requests, prompt_width)
        out.append(ForceLength([self.targets[r.slot.item_id] for r in requests], prompt_width, self.eos_ids[0]))
        return out

    def _stops(self, rows):
        return []

    def _result(self, request, prompt_ids, tokens, prompt_hash, seconds):
        end = next((i + 1 for i, t in enumerate(tokens) if t in self.eos_ids), len(tokens))
        return SimpleNamespace(request=request, tokens_out=end, parsed=ParsedOutput(None, "", "ok"))


def run_naive(model, prompts, targets, batch: int, eos: int, device: str) -> tuple[int, float]:
    produced = 0
    started = time.perf_counter()
    for start in range(0, len(prompts), batch):
        chunk, goal = prompts[start:start + batch], targets[start:start + batch]
        width = max(len(p) for p in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(chunk):
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max(goal), eos_token_id=eos, pad_token_id=0,
                                 logits_processor=LogitsProcessorList([ForceLength(goal, width, eos)]))
        produced += sum(goal)
        assert out.shape[1] - width == max(goal)
    synchronize(device)
    return produced, time.perf_counter() - started


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
    return 2 * src.numel() / sorted(times)[len(times) // 2]


def floor_tok_s(weight_bytes: int, kv_per_token: int, batch: float, mean_context: float, bandwidth: float | None) -> float | None:
    """Decode-step floor with `batch` rows always busy: every step reads all weights and every row's KV cache."""
    if bandwidth is None:
        return None
    return batch * bandwidth / (weight_bytes + batch * mean_context * kv_per_token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--n", type=int, default=32, help="prompts for the backend path")
    parser.add_argument("--naive-n", type=int, help="prompts for the naive baseline (a prefix; default: n)")
    parser.add_argument("--batch", default="auto", help="rows per batch for the backend ('auto' = from free memory)")
    parser.add_argument("--naive-batch", type=int, default=64)
    parser.add_argument("--engine", choices=["static", "paged", "dynamic"], default="static")
    parser.add_argument("--median", type=int, default=700)
    parser.add_argument("--cap", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = args.device
    torch.manual_seed(args.seed)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    config = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=8192, pad_token_id=0, eos_token_id=1)
    built = time.perf_counter()
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    synchronize(device)
    build_s = time.perf_counter() - built
    median, cap = (args.median, args.cap) if args.shape != "tiny" or device != "cpu" else (min(args.median, 64), min(args.cap, 160))
    prompts, targets = workload(args.n, config.vocab_size, median, cap, args.seed)
    eos = config.vocab_size - 1
    naive_n = args.naive_n or args.n
    print(f"shape {args.shape}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params on {device} "
          f"(built in {build_s:.1f} s); {args.n} prompts, {sum(targets)} output tokens (median target {sorted(targets)[len(targets) // 2]})",
          flush=True)

    naive_tokens, naive_s = run_naive(model, prompts[:naive_n], targets[:naive_n], args.naive_batch, eos, device)
    naive = naive_tokens / naive_s
    print(f"naive generate(), dynamic cache, batch {args.naive_batch}: {naive_tokens} tokens in {naive_s:.1f} s = {naive:.0f} tok/s", flush=True)

    batch = args.batch if args.batch == "auto" else int(args.batch)
    backend = BenchBackend(model, device, args.engine, batch, eos, {str(i): t for i, t in enumerate(targets)})
    requests = [GenerationRequest(Slot(1, "bench", str(i), 1), [], Sampling(0.0, None, targets[i]), i) for i in range(args.n)]
    encoded = [(r, prompts[i], "") for i, r in enumerate(requests)]
    if device.startswith("cuda"):  # compile and warm up on a small prefix, outside the timing
        warm = BenchBackend(model, device, args.engine, batch, eos, {str(i): min(32, t) for i, t in enumerate(targets)})
        warm.generate_encoded(encoded[: min(8, len(encoded))], lambda r: None)
    produced = []
    started = time.perf_counter()
    backend.generate_encoded(encoded, lambda r: produced.append(r.tokens_out))
    synchronize(device)
    backend_s = time.perf_counter() - started
    assert len(produced) == args.n and sum(produced) == sum(targets), "every row must produce exactly its target"
    backend_tok_s = sum(produced) / backend_s
    print(f"backend engine={args.engine}, batches {backend.batches[:8]}{'…' if len(backend.batches) > 8 else ''}: "
          f"{sum(produced)} tokens in {backend_s:.1f} s = {backend_tok_s:.0f} tok/s", flush=True)

    bandwidth = copy_bandwidth(device)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = kv_bytes_per_token(config, torch.tensor([], dtype=dtype).element_size())
    mean_batch = sum(backend.batches) / len(backend.batches) if backend.batches else args.n
    mean_context = sum(len(p) for p in prompts) / len(prompts) + sum(targets) / len(targets) / 2
    floor = floor_tok_s(weight_bytes, kv, mean_batch, mean_context, bandwidth)
    result = {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "shape": args.shape, "engine": args.engine, "n": args.n, "naive_n": naive_n, "batch": args.batch,
        "mean_backend_batch": round(mean_batch, 1), "output_tokens": sum(targets),
        "naive_tok_s": round(naive, 1), "backend_tok_s": round(backend_tok_s, 1), "speedup": round(backend_tok_s / naive, 2),
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1) if bandwidth else None,
        "floor_tok_s": round(floor, 1) if floor else None,
        "floor_fraction": round(backend_tok_s / floor, 3) if floor else None,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
