"""Client-side limits: requests/minute and tokens/minute, and a token estimate for a prompt.

A limit of N per minute means: never more than N in any 60 s window (the first one included), spread evenly. Each
`Allowance` keeps a log of what it granted during the last window and paces grants (after n units the next waits
n / N of a window), so a fresh limiter sends no burst and a full one never exceeds N. The window is the minute plus
`MARGIN_S`: a request reaches the server some time after it was granted here, and two requests' delays may differ
by up to that margin without the server ever counting N + 1 in one of its minutes.

The allowances are plain data updated under one lock and read from a clock given to the limiter, so the same object
can later be kept somewhere several processes share.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

MINUTE_S = 60.0
MARGIN_S = 1.0


def estimate_tokens(text: str) -> int:
    """Rough count without a tokenizer download: ~4 ASCII characters per token, ~1 token per other character."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return ascii_chars // 4 + (len(text) - ascii_chars) + 1


def request_tokens(body: dict[str, Any]) -> int:
    """What a chat request may cost in tokens: its messages' estimate plus the most it lets the judge write."""
    tokens = sum(estimate_tokens(m.get("content") or "") for m in body["messages"] if isinstance(m, dict))
    return tokens + (body.get("max_completion_tokens") or body.get("max_tokens") or 0)


class Allowance:
    """At most `limit` units granted in any `window` seconds, spread evenly."""

    def __init__(self, limit: float, window: float):
        self.limit = limit
        self.window = window
        self.granted: deque[tuple[float, float]] = deque()  # (leaves the window at, units) of the grants inside it
        self.in_window = 0.0
        self.next_at = -math.inf  # pacing: the earliest time of the next grant

    def wait(self, units: float, now: float) -> float:
        """Seconds until `units` may be granted (0: now). More than the limit at once goes alone in its window."""
        units = min(units, self.limit)
        while self.granted and self.granted[0][0] <= now:
            self.in_window -= self.granted.popleft()[1]
        wait = max(0.0, self.next_at - now)
        excess = self.in_window + units - self.limit
        for leaves_at, amount in self.granted:  # the oldest grants leave the window first
            if excess <= 0:
                break
            excess -= amount
            wait = max(wait, leaves_at - now)
        return wait

    def grant(self, units: float, now: float) -> None:
        units = min(units, self.limit)
        self.granted.append((now + self.window, units))
        self.in_window += units
        self.next_at = now + units * self.window / self.limit


class RateLimiter:
    """Waits until every configured allowance can pay for a request; `None` limits are unlimited. Callers are
    served in the order they arrive."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None,
                 clock: Callable[[], float] = time.monotonic):
        window = MINUTE_S + MARGIN_S
        self.requests = Allowance(requests_per_minute, window) if requests_per_minute else None
        self.tokens = Allowance(tokens_per_minute, window) if tokens_per_minute else None
        self.clock = clock
        self.lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        costs = [(a, units) for a, units in ((self.requests, 1), (self.tokens, tokens)) if a is not None]
        if not costs:
            return
        async with self.lock:
            while (wait := max(a.wait(units, self.clock()) for a, units in costs)) > 0:
                await asyncio.sleep(wait)
            now = self.clock()
            for allowance, units in costs:
                allowance.grant(units, now)
