"""vLLM offline engine (optional extra `[vllm]`, imported lazily): token ids rendered by the model's own chat
template, one `SamplingParams` per request (temperature by category, seed per request), output parsed from token
ids by the same Harmony code as the hf backend.

Requests go to the `LLM`'s engine (`add_request`, `step`: the loop `LLM.generate` runs), so each answer is stored
the moment it finishes instead of when the whole turn has; what a crash or a stop leaves unfinished is all that is
lost.

vLLM stops on token ids and strings only, neither of which can tell the `<|end|>` of the final message from that of
the analysis. So `<|end|>` is a stop token, and a request that closed a message other than the final one is added
again at once with its output appended (vLLM's prefix cache makes that prefill nearly free) until it has closed its
final message, ended its output or spent its budget.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..chat import parse_output
from ..compat import UPSTREAM, Profile
from ..config import GenerationConfig as RunGenerationConfig
from ..config import VLLMModel
from ..errors import UserError
from .base import GenerationRequest, GenerationResult, OnResult
from .template import RendersLocally


class VLLMBackend(RendersLocally):
    name = "vllm"
    cfg: VLLMModel

    def __init__(self, cfg: VLLMModel, generation: RunGenerationConfig, require_engine: bool = True,
                 profile: Profile = UPSTREAM):
        if require_engine:  # at start-up, not when the first batch is due
            try:
                import vllm  # noqa: F401
            except ImportError:
                raise UserError("model.backend: vllm is not installed; `pip install -e \".[vllm]\"` on a CUDA machine, "
                                "or use backend: hf") from None
        super().__init__(cfg, profile)
        self.generation = generation
        self.stop_rule = self.chat.stop_rule()
        self.llm = None
        self.added = 0  # requests added to the engine so far: their ids are unique for the engine's life

    def close(self) -> None:
        self.llm = None

    def _load(self) -> Any:
        if self.llm is None:
            from vllm import LLM

            engine: dict[str, Any] = {"model": self.chat.path, "revision": self.cfg.revision, "dtype": self.cfg.dtype,
                                      "trust_remote_code": self.cfg.trust_remote_code,
                                      "tensor_parallel_size": self.cfg.tensor_parallel_size,
                                      "gpu_memory_utilization": self.cfg.gpu_memory_utilization}
            if self.cfg.data_parallel_size > 1:
                engine["data_parallel_size"] = self.cfg.data_parallel_size
            if self.cfg.max_model_len:
                engine["max_model_len"] = self.cfg.max_model_len
            self.llm = LLM(**engine)
        return self.llm

    def generate(self, requests: list[GenerationRequest], on_result: OnResult, stop: threading.Event | None = None) -> None:
        """Every request is added to vLLM's engine at once and stepped through it; each is handed to `on_result` (stored)
        the moment it finishes, and one that closed a message other than the final one is added again at once. When
        `stop` is set or `on_result` raises, the requests still in the engine are aborted."""
        if not requests:
            return
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self._load().llm_engine
        stop_ids = sorted(self.stop_rule.eos_ids) + ([self.stop_rule.end_id] if self.stop_rule.final_header else [])
        started = time.perf_counter()
        waiting: dict[str, tuple[GenerationRequest, list[int], str, list[int]]] = {}

        def add(request: GenerationRequest, ids: list[int], prompt_hash: str, so_far: list[int]) -> None:
            s = request.sampling
            params = SamplingParams(temperature=s.temperature, top_p=s.top_p or 1.0, max_tokens=s.max_new_tokens - len(so_far),
                                    seed=request.seed, stop_token_ids=stop_ids, frequency_penalty=s.frequency_penalty or 0.0,
                                    skip_special_tokens=False, output_kind=RequestOutputKind.FINAL_ONLY)
            self.added += 1
            request_id = f"llmjp-eval-{self.added}"
            engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids + so_far), params)
            waiting[request_id] = (request, ids, prompt_hash, so_far)

        try:
            for request in requests:
                add(request, *self.chat.encode(request.messages), [])
            done = 0
            while waiting and not (stop and stop.is_set()):
                if not engine.has_unfinished_requests():
                    raise RuntimeError(f"vLLM's engine stopped with {len(waiting)} requests unanswered")
                for output in engine.step():
                    if not output.finished or output.request_id not in waiting:
                        continue
                    request, ids, prompt_hash, so_far = waiting.pop(output.request_id)
                    completion = output.outputs[0]
                    tokens = so_far + list(completion.token_ids)
                    stopped = completion.finish_reason == "stop"
                    if stopped and self.stop_rule.message_closed(tokens) and len(tokens) < request.sampling.max_new_tokens:
                        add(request, ids, prompt_hash, tokens)
                        continue
                    done += 1
                    raw = self.chat.decode(tokens)
                    # "length": max_tokens or the model's context window (max_model_len) ran out
                    parsed = parse_output(raw, completion.finish_reason == "length", self.chat.reasoning, self.chat.special_tokens)
                    on_result(GenerationResult(request, raw, parsed, completion.finish_reason, len(ids), len(tokens),
                                               (time.perf_counter() - started) / done, prompt_hash))
        finally:
            if waiting:
                engine.abort_request(list(waiting))
