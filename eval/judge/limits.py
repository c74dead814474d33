"""Client-side limits: requests/minute and tokens/minute token buckets, and a token estimate for a prompt."""

from __future__ import annotations

import asyncio
import time


def estimate_tokens(text: str) -> int:
    """Rough count without a tokenizer download: ~4 ASCII characters per token, ~1 token per other character."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return ascii_chars // 4 + (len(text) - ascii_chars) + 1


class _Bucket:
    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = per_minute
        self.level = per_minute
        self.stamp = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        amount = min(amount, self.capacity)
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate


class RateLimiter:
    """Waits until both buckets can pay for a request; `None` limits are unlimited."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None):
        self.requests = _Bucket(requests_per_minute) if requests_per_minute else None
        self.tokens = _Bucket(tokens_per_minute) if tokens_per_minute else None
        self.lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        async with self.lock:
            while True:
                wait = 0.0
                for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
                    if bucket is not None:
                        bucket.refill()
                        wait = max(wait, bucket.wait_for(amount))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.requests is not None:
                self.requests.level -= 1
            if self.tokens is not None:
                self.tokens.level -= min(tokens, self.tokens.capacity)
