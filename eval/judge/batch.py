"""Batch API mode (`judge: {mode: batch}`): one JSONL of requests, uploaded, run as a batch, polled, mapped back by
`custom_id` (the judgment key). The batch id is stored before polling, so a killed run resumes polling the same batch
instead of paying again. Lines that failed or hold no score are retried synchronously (parse re-asks included).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

import openai

from .. import progress
from ..errors import UserError
from ..records import Judgment
from ..statuses import JudgmentStatus as J
from ..store import Store
from .client import JudgeClient, Progress, _Failed, _short, mentions_content_filter
from .replies import MalformedReply, read_reply
from .requests import JudgeRequest

log = logging.getLogger("eval.judge")
TERMINAL = {"completed", "failed", "expired", "cancelled"}
OnJudgment = Callable[[Judgment], Awaitable[None]]


class BatchJudge:
    def __init__(self, client: JudgeClient, store: Store, poll_s: float):
        self.client = client
        self.api = client.client
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
        lines = []
        for r in requests:
            lines.append(json.dumps({"custom_id": r.key, "method": "POST", "url": "/v1/chat/completions",
                                     "body": self.client.request_body(r)},
                                    ensure_ascii=False))
        try:
            upload = await self.api.files.create(file=("judge-requests.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch")
            batch = await self.api.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                  completion_window="24h", metadata={"harness": "llmjp-eval"})
        except openai.APIStatusError as e:
            if e.status_code in (404, 405, 501):
                raise UserError(f"judge.mode: the judge server has no Files/Batch API (HTTP {e.status_code} from "
                                f"{e.request.url.path}); set judge.mode: sync — everything stored so far is kept") from None
            raise UserError(f"judge.mode batch: submitting the batch failed (HTTP {e.status_code}: {_short(e)}); run "
                            "again later — everything stored so far is kept") from None
        except openai.APIError as e:
            raise UserError(f"judge.mode batch: submitting the batch failed ({_short(e)}); run again later — everything "
                            "stored so far is kept") from None
        self.store.add_batch(batch.id, upload.id, [r.key for r in requests])
        return batch.id

    async def _finish(self, batch_id: str, requests: dict[str, JudgeRequest], on_judgment: OnJudgment) -> None:
        batch = await self._poll(batch_id, len(requests))
        outputs: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await self.api.files.content(file_id)
                for line in content.content.split(b"\n"):
                    row = _output_row(line, self.client.cfg.max_reply_bytes)
                    if row is not None:
                        outputs[row["custom_id"]] = row  # a line of any other shape: its request is asked again
        retry = []
        for key, request in requests.items():
            progress = Progress(request, attempts=1, asks=1, sent=self.client.policy.kwargs(request.params))
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
        response = row.get("response") if isinstance(row.get("response"), dict) else {}
        body = response.get("body") if isinstance(response.get("body"), dict) else {}
        if response.get("status_code") == 200:
            try:
                reply = read_reply(body)
            except MalformedReply:
                progress.asks = 0  # ask synchronously, with a full set of asks
                return None
            return self.client.interpret(progress, reply, batch=True)
        error = body.get("error") or {}
        if response.get("status_code") == 400 and mentions_content_filter(error.get("code"), str(error.get("message"))):
            # As for a synchronous 400, the profile decides: one ask used up (then asked synchronously), or the end.
            refused = _Failed(J.CONTENT_FILTERED, "the judge refused the prompt (content filter)", 0, bad_request=True)
            return self.client.decide(progress, failure=refused)
        progress.asks = 0
        return None

    async def _poll(self, batch_id: str, size: int) -> Any:
        bar = progress.Bar(f"batch {batch_id[:18]}", "req", size)
        try:
            while True:
                batch = await self.api.batches.retrieve(batch_id)
                counts = batch.request_counts
                if counts is not None:
                    bar.set_done(counts.completed + counts.failed)
                if batch.status in TERMINAL:
                    return batch
                await asyncio.sleep(self.poll_s)
        finally:
            bar.close()


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
