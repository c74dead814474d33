"""Which transformers engine runs a workload, and how much memory its KV cache may take.

- `choose_engine`: `engine: auto` runs long budgets (thinking models) on the paged engine, where a finished row is
  replaced at once and the cache holds only the tokens rows really have; short budgets run on the static engine,
  whose compiled decode step is fastest when the allocated length is close to what rows use.
- `STATIC_FIRST_SEGMENT`: the static engine allocates its cache for the tokens a round may add, not for the whole
  budget (a static cache is attended over its full allocated length on every step): every row first runs for this
  many new tokens, the rows still going then run on from their prompt plus output for twice as many, and so on. Each
  round re-batches the survivors by length, so a finished row frees its place at the end of its round.
- `cache_budget`: on CUDA, the bytes the allocator can really give (free device memory plus what torch holds
  reserved but unallocated) times `memory_fraction`; on CPU a small fixed size, never a share of host RAM.
- `continuous_batching_config`: the paged engine's cache size, rows per step, compile level and CUDA graphs.
"""

from __future__ import annotations

import gc
from math import ceil
from typing import Any

LONG_BUDGET = 2048  # new-token budgets from this size on run on the paged engine under `engine: auto` (CUDA)
STATIC_FIRST_SEGMENT = 1024  # new tokens of the static engine's first round; each later round doubles it
CPU_CACHE_BYTES = 256 * 2**20  # the KV cache budget on CPU: small and explicit (CPU runs are tests and dry runs)
CPU_MAX_BATCH_TOKENS = 512  # tokens per forward step of the paged engine on CPU
PAGED_MAX_ROWS = 1024  # transformers' own ceiling on rows per step
PAGED_COMPILE_LEVEL = 1  # transformers' level 1: torch.compile, mode "default", dynamic shapes (shortest warm-up)


def choose_engine(requested: str, device: str, max_new_tokens: int) -> str:
    if requested != "auto":
        return requested
    if device.startswith("cuda") and max_new_tokens >= LONG_BUDGET:
        return "paged"
    return "static"


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    text = getattr(config, "text_config", None) or config
    layers = text.num_hidden_layers
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def release_cached_memory(device: str) -> None:
    """Hand memory cached by the last batch back to the device, so the next batch is sized from all of it. On CPU the
    cache budget is a fixed size, so there is nothing to hand back (and a full garbage collection costs 0.1–0.3 s)."""
    if device.startswith("cuda"):
        import torch

        gc.collect()
        torch.cuda.empty_cache()


def allocatable_bytes(device: str) -> int:
    """Bytes a new tensor can get: free device memory plus memory torch holds reserved but not allocated."""
    import torch

    dev = torch.device(device)
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))


def cache_budget(device: str, fraction: float) -> int:
    if device.startswith("cuda"):
        return int(allocatable_bytes(device) * fraction)
    return CPU_CACHE_BYTES


def auto_batch_size(budget_bytes: int, kv_per_token: int, max_len: int, vocab: int, cap: int) -> int:
    # Per row: its KV cache at full length, plus logits and sampling temporaries over the vocabulary.
    per_row = kv_per_token * max_len + 24 * vocab
    return max(1, min(cap, budget_bytes // per_row))


def continuous_batching_config(device: str, fraction: float, compile_mode: str, kv_per_token: int,
                               sequence_lengths: list[int], max_rows: int | None = None):
    """transformers' `ContinuousBatchingConfig` for one workload (`sequence_lengths`: prompt + budget per request;
    `max_rows`: rows per step, `generation.batch_size` when set).

    On CUDA transformers sizes the cache itself from the device's free memory (after emptying torch's cache) times
    `memory_fraction`, and solves the tokens per step against it. On CPU both are given explicitly: the blocks the
    workload can use at once, within `CPU_CACHE_BYTES`."""
    from transformers import ContinuousBatchingConfig

    cuda = device.startswith("cuda")
    options: dict[str, Any] = {
        "max_memory_percent": fraction,
        "max_requests_per_batch": min(len(sequence_lengths), max_rows or PAGED_MAX_ROWS),
        # `auto` stays eager: on CPU the compiled step of transformers' continuous batching recompiled on every call
        # up to torch's limit (transformers 5.24) or failed in the generation loop (5.17). See benchmarks/README.md.
        "default_compile_level": PAGED_COMPILE_LEVEL if compile_mode == "on" else 0,
        # None: transformers captures CUDA graphs when the attention needs no mask (flash attention).
        "use_cuda_graph": False if compile_mode == "off" else None,
    }
    config = ContinuousBatchingConfig(**options)
    if not cuda:
        block = getattr(config, "page_size", None) or config.block_size  # renamed page_size after transformers 5.17
        assert block is not None  # one of the two names holds the default size
        needed = sum(ceil(length / block) for length in sequence_lengths)
        config.num_blocks = max(1, min(needed, CPU_CACHE_BYTES // (kv_per_token * block)))
        config.max_batch_tokens = CPU_MAX_BATCH_TOKENS
    return config
