"""The servers behind `model.base_urls` as one fleet: which server takes the next attempt of a request, which servers
are out of rotation after failing, when they are tried again, and when the fleet as a whole is down.

Plain bookkeeping on a clock, with no network and no event loop of its own; the openai backend
(`openai_server.py`) does the asking and reports each attempt's outcome here. The rules:

- An attempt goes to the server in rotation with the fewest requests in flight (then the fewest sent), never to a
  server the same request already failed on while another one is available.
- A server whose attempts fail `EJECT_AFTER` times in a row (connection error, timeout, 5xx) leaves the rotation for
  `COOLDOWN_S`, doubled each time it leaves again without an answer in between (up to `MAX_COOLDOWN_S`). Once its
  time is out it is on trial: one request at a time, until one is answered (back in rotation) or fails (out again).
- The fleet is down when every server is out of rotation and has left it `OUTS_TO_GIVE_UP` times since it last
  answered (two failed trials: about half a minute in which no server answered): the run stops generating rather
  than wait for servers that do not come back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EJECT_AFTER = 3
COOLDOWN_S = 10.0
MAX_COOLDOWN_S = 300.0
OUTS_TO_GIVE_UP = 3


@dataclass
class Server:
    index: int
    url: str
    in_flight: int = 0
    sent: int = 0  # attempts sent to it
    answered: int = 0
    failed: int = 0  # attempts that failed on the server's side (connection, timeout, 5xx)
    refused: int = 0  # attempts it answered with another error (400, 401, 429 …): the server is up
    taken_out: int = 0  # times it left the rotation
    failures_in_a_row: int = 0
    outs_in_a_row: int = 0  # times it left the rotation since it last answered
    back_at: float | None = None  # out of rotation until then; after that on trial until an attempt ends
    last_error: str | None = None

    def counts(self) -> dict[str, Any]:
        return {"url": self.url, "sent": self.sent, "answered": self.answered, "failed": self.failed,
                "refused": self.refused, "taken_out": self.taken_out, "in_rotation": self.back_at is None}


class Fleet:
    def __init__(self, urls: list[str], clock: Callable[[], float] = time.monotonic):
        self.servers = [Server(i, url) for i, url in enumerate(urls)]
        self.clock = clock
        self.down = False  # once down, down for good: the run stops generating and a later run starts afresh

    def _usable(self, server: Server, now: float) -> bool:
        if server.back_at is None:
            return True
        return server.back_at <= now and server.in_flight == 0  # on trial: one attempt at a time

    def take(self, avoid: set[int]) -> Server | None:
        """The server for a request's next attempt, counted in flight from now; `avoid` holds the servers this request
        already failed on. None when no other server can take it now."""
        now = self.clock()
        usable = [s for s in self.servers if s.index not in avoid and self._usable(s, now)]
        if not usable:
            return None
        server = min(usable, key=lambda s: (s.in_flight, s.sent, s.index))
        server.in_flight += 1
        server.sent += 1
        return server

    def any_usable(self) -> bool:
        now = self.clock()
        return any(self._usable(s, now) for s in self.servers)

    def seconds_until_trial(self) -> float:
        """How long until a server out of rotation may be tried again (0 when one may be tried now)."""
        now = self.clock()
        waits = [s.back_at - now for s in self.servers if s.back_at is not None]
        return max(0.0, min(waits)) if waits else 0.0

    def release(self, server: Server) -> None:
        """An attempt taken with `take` has ended (its outcome is reported with one of the methods below)."""
        server.in_flight -= 1

    def answered(self, server: Server) -> None:
        server.answered += 1
        self._up(server)

    def refused(self, server: Server) -> None:
        """The server answered with an error about the request (400, 401, 429 …): it is up."""
        server.refused += 1
        self._up(server)

    def _up(self, server: Server) -> None:
        server.failures_in_a_row = server.outs_in_a_row = 0
        server.back_at = None

    def failed(self, server: Server, error: str) -> None:
        """The attempt failed on the server's side; enough of them in a row, or a failed trial, take it out."""
        server.failed += 1
        server.last_error = error
        now = self.clock()
        if server.back_at is not None and server.back_at > now:
            return  # already out: an attempt sent before it left
        server.failures_in_a_row += 1
        if server.back_at is not None or server.failures_in_a_row >= EJECT_AFTER:
            server.taken_out += 1
            server.outs_in_a_row += 1
            server.failures_in_a_row = 0
            server.back_at = now + min(COOLDOWN_S * 2 ** (server.outs_in_a_row - 1), MAX_COOLDOWN_S)
            self.down = all(s.back_at is not None and s.back_at > now and s.outs_in_a_row >= OUTS_TO_GIVE_UP
                            for s in self.servers)

    def down_message(self) -> str:
        failing = "; ".join(f"{s.url} ({s.last_error})" for s in self.servers)
        return f"no generation server answers: {failing}"

    def counts(self) -> list[dict[str, Any]]:
        return [s.counts() for s in self.servers]
