"""Batch API mode (`judge: {mode: batch}`): one JSONL of requests, uploaded, run as a batch, polled, mapped back by
`custom_id` (the judgment key), through the transport's Batch API (`transport.Batches`). The batch id is stored before
polling, so a killed run resumes polling the same batch instead of paying again. Lines that failed or hold no score
are retried synchronously (parse re-asks included).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .. import progress
from ..errors import UserError
from ..records import Judgment
from ..statuses import JudgmentStatus as J
from ..store import Store
from .client import JudgeClient, Progress
from .openai_api import mentions_content_filter
from .replies import MalformedReply, read_reply
from .requests import JudgeRequest
from .transport import Batches, BatchState, CallFailed

log = logging.getLogger("eval.judge")
TERMINAL = {"completed", "failed", "expired", "cancelled"}
OnJudgment = Callable[[Judgment], Awaitable[None]]


class BatchJudge:
    def __init__(self, client: JudgeClient, store: Store, poll_s: float):
        if client.transport.batches is None:
            raise UserError("judge.mode: batch needs a judge with a Batch API (the OpenAI or Azure API, or a compatible "
                            "server that has one); set judge.mode: sync — everything stored so far is kept")
        self.client = client
        self.api: Batches = client.transport.batches
        self.store = store
        self.poll_s = poll_s

    async def run(self, requests: list[JudgeRequest], on_judgment: OnJudgment) -> None:
        """Judge `requests`, each judgment handed to `on_judgment` (which stores it)."""
        by_key = {r.key: r for r in requests}
        for batch in self.store.open_batches():  # a killed run left these: finish them before paying again
            covered = [k for k in batch["keys"] if k in by_key]
            log.warning("resuming batch %s (%d requests)", batch["batch_id"], len(covered))
            await self._finish(batch["batch_id"], {k: by_key.pop(k) for k in covered}, on_judgment)
        if by_key:
            if self.client.ledger.exhausted():
                return
            batch_id = await self._submit(list(by_key.values()))
            await self._finish(batch_id, by_key, on_judgment)

    async def _submit(self, requests: list[JudgeRequest]) -> str:
        lines = [{"custom_id": r.key, "method": "POST", "url": "/v1/chat/completions", "body": self.client.request_body(r)}
                 for r in requests]
        batch_id, input_file_id = await self.api.submit(lines)
        self.store.add_batch(batch_id, input_file_id, [r.key for r in requests])
        return batch_id

    async def _finish(self, batch_id: str, requests: dict[str, JudgeRequest], on_judgment: OnJudgment) -> None:
        batch = await self._poll(batch_id, len(requests))
        outputs: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for line in (await self.api.content(file_id)).split(b"\n"):
                    row = _output_row(line, self.client.cfg.max_reply_bytes)
                    if row is not None:
                        outputs[row["custom_id"]] = row  # a line of any other shape: its request is asked again
        retry = []
        for key, request in requests.items():
            progress = Progress(request, attempts=1, asks=1, sent=self.client.transport.parameters(request.params))
            judgment = self._settle(progress, outputs.get(key))
            if judgment is None:
                retry.append(progress)
            else:
                await on_judgment(judgment)
        self.store.finish_batch(batch_id, batch.status)
        if retry:
            log.warning("batch %s: %d requests failed or held no score; asking them synchronously", batch_id, len(retry))

            async def again(progress: Progress) -> None:
                async with self.client.semaphore:
                    await on_judgment(await self.client.continue_judging(progress))

            await asyncio.gather(*(again(p) for p in retry))

    def _settle(self, progress: Progress, row: dict[str, Any] | None) -> Judgment | None:
        """The judgment a batch output line settles, or None to ask synchronously."""
        if row is None:
            progress.asks = 0  # nothing came back for it: a full set of asks remains
            return None
        response = _object(row.get("response"))
        body = _object(response.get("body"))
        if response.get("status_code") == 200:
            try:
                reply = read_reply(body)
            except MalformedReply:
                progress.asks = 0  # ask synchronously, with a full set of asks
                return None
            return self.client.interpret(progress, reply, batch=True)
        error = _object(body.get("error"))  # a server may give its error as text: then it says nothing of a filter
        if response.get("status_code") == 400 and mentions_content_filter(error.get("code"), str(error.get("message"))):
            # As for a synchronous 400, the profile decides: one ask used up (then asked synchronously), or the end.
            refused = CallFailed(J.CONTENT_FILTERED, "the judge refused the prompt (content filter)", 0, bad_request=True)
            return self.client.decide(progress, failure=refused)
        progress.asks = 0
        return None

    async def _poll(self, batch_id: str, size: int) -> BatchState:
        bar = progress.Bar(f"batch {batch_id[:18]}", "req", size)
        try:
            while True:
                batch = await self.api.state(batch_id)
                if batch.done is not None:
                    bar.set_done(batch.done)
                if batch.status in TERMINAL:
                    return batch
                await asyncio.sleep(self.poll_s)
        finally:
            bar.close()


def _object(value: Any) -> dict[str, Any]:
    """A JSON object of an output line, or an empty one in place of anything else."""
    return value if isinstance(value, dict) else {}


def _output_row(line: bytes, limit: int) -> dict[str, Any] | None:
    """A line of a batch's output or error file, or None when it is empty, larger than a reply may be
    (judge.max_reply_bytes), not UTF-8 JSON, or has no custom_id."""
    if not line.strip() or len(line) > limit:
        return None
    try:
        row = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        return None
    return row if isinstance(row, dict) and isinstance(row.get("custom_id"), str) else None
