"""Decoding pieces for transformers' `generate`: per-row sampling that does not depend on batching, and a stop
at the end of the Harmony final message.

`RowSampler` turns greedy decoding into sampling with the Gumbel-max trick: argmax(logits / T + G) is a sample of
softmax(logits / T). The noise G is a counter-based hash of (row seed, step, token id), so a row's output depends
only on its own seed — not on which rows share its batch, the batch size, or the engine. Rows with T = 0 stay
greedy; top-p filtering is applied per row.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, StoppingCriteria

_MASK32 = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    # 32-bit integer finaliser; operands stay below 2**32 and the constant below 2**27, so int64 products are exact.
    h = (((h >> 16) ^ h) * 0x45D9F3B) & _MASK32
    h = (((h >> 16) ^ h) * 0x45D9F3B) & _MASK32
    return (h >> 16) ^ h


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor | int, vocab: int) -> torch.Tensor:
    """Uniform (0, 1) noise of shape [rows, vocab], a pure function of (seed, step, token id); `steps` is one step
    for every row or one per row."""
    row = _mix32((seeds * 0x9E3779B1 + steps * 0x85EBCA77) & _MASK32)
    tokens = torch.arange(vocab, device=seeds.device, dtype=torch.int64) * 0x27D4EB2F
    h = _mix32((row[:, None] ^ tokens[None, :]) & _MASK32)
    # 23 bits keep (x + 0.5) / 2**23 exact in float32 and strictly inside (0, 1).
    return ((h >> 9).to(torch.float32) + 0.5) / float(1 << 23)


class RowSampler(LogitsProcessor):
    """`prompt_len`: the (padded) width of the batch's input; `generated`: tokens each row produced before this call
    (a static-engine row that runs on in a later round), so a row's step counts from its own first output token."""

    def __init__(self, temperatures: list[float], top_ps: list[float | None], seeds: list[int], prompt_len: int, device,
                 generated: list[int] | None = None):
        self.temperature = torch.tensor(temperatures, dtype=torch.float32, device=device)
        self.top_p = torch.tensor([1.0 if p is None else p for p in top_ps], dtype=torch.float32, device=device)
        self.seeds = torch.tensor(seeds, dtype=torch.int64, device=device)
        self.sampled = self.temperature > 0
        self.any_sampled = bool(self.sampled.any())
        self.any_top_p = bool((self.sampled & (self.top_p < 1.0)).any())
        self.prompt_len = prompt_len
        self.generated = torch.tensor(generated or [0] * len(seeds), dtype=torch.int64, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        if not self.any_sampled:
            return scores
        steps = self.generated + (input_ids.shape[1] - self.prompt_len)
        logits = scores.float() / self.temperature.clamp_min(1e-6)[:, None]
        if self.any_top_p:
            logits = self._top_p(logits)
        gumbel = -torch.log(-torch.log(uniform_noise(self.seeds, steps, logits.shape[-1])))
        return torch.where(self.sampled[:, None], logits + gumbel, scores.float())

    def _top_p(self, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        # Keep the smallest prefix whose mass reaches p (the top token always survives).
        drop = (mass_before >= self.top_p[:, None]) & (self.top_p[:, None] < 1.0)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


class WhenSet(StoppingCriteria):
    """Stop every row once `event` is set (the run is stopping): the batch ends at its next step."""

    def __init__(self, event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class FinalMessageStop(StoppingCriteria):
    """Stop a row at `<|end|>` once it is inside the Harmony `final` channel (the answer is complete); the same rule
    as `StopRule.length`, vectorised over the batch. `in_final`: the rows that opened their final message before this
    call (a row that runs on in a later round)."""

    def __init__(self, final_header: tuple[int, ...], end_id: int, in_final: list[bool], device):
        self.header = torch.tensor(final_header, device=device)
        self.end_id = end_id
        self.in_final = torch.tensor(in_final, dtype=torch.bool, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.Tensor:
        width = self.header.numel()
        if input_ids.shape[1] >= width:
            self.in_final |= (input_ids[:, -width:] == self.header).all(dim=-1)
        return self.in_final & (input_ids[:, -1] == self.end_id)
