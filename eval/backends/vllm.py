"""vLLM offline engine (optional extra `[vllm]`, imported lazily): token ids rendered by the model's own chat
template, one `SamplingParams` per request (temperature by category, seed per request), output parsed from token
ids by the same Harmony code as the hf backend.
"""

from __future__ import annotations

import time
from typing import Any

from ..chat import parse_output
from ..config import GenerationConfig as RunGenerationConfig
from ..config import VLLMModel
from ..errors import UserError
from .base import GenerationRequest, GenerationResult, OnResult
from .template import ChatRenderer


class VLLMBackend:
    name = "vllm"

    def __init__(self, cfg: VLLMModel, generation: RunGenerationConfig):
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise UserError("model.backend: vllm is not installed; `pip install -e \".[vllm]\"` on a CUDA machine, "
                            "or use backend: hf") from None
        self.cfg = cfg
        self.generation = generation
        self.chat = ChatRenderer(cfg.path, cfg.revision, cfg.trust_remote_code, cfg.chat_template_kwargs)
        self.llm = None

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.cfg.path, "revision": self.cfg.revision, "dtype": self.cfg.dtype,
                "template": self.chat.template_hash, "chat_template_kwargs": self.cfg.chat_template_kwargs,
                "reasoning": self.cfg.reasoning.model_dump()}

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

    def generate(self, requests: list[GenerationRequest], on_result: OnResult) -> None:
        if not requests:
            return
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        llm = self._load()
        eos = self.chat.eos_ids()
        encoded = [self.chat.encode(r.messages) for r in requests]
        params = [SamplingParams(temperature=r.sampling.temperature, top_p=r.sampling.top_p or 1.0,
                                 max_tokens=r.sampling.max_new_tokens, seed=r.seed, stop_token_ids=eos,
                                 frequency_penalty=r.sampling.frequency_penalty or 0.0,
                                 skip_special_tokens=False) for r in requests]
        started = time.perf_counter()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in encoded], params, use_tqdm=True)
        seconds = (time.perf_counter() - started) / len(requests)
        for request, (ids, prompt_hash), output in zip(requests, encoded, outputs):
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            raw = self.chat.decode(tokens)
            hit_limit = completion.finish_reason == "length"
            parsed = parse_output(raw, hit_limit, self.cfg.reasoning, self.chat.strip_tokens)
            on_result(GenerationResult(request, raw, parsed, completion.finish_reason, len(ids), len(tokens), seconds, prompt_hash))
