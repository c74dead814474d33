"""Generation backends behind one protocol (`base.Backend`)."""

from __future__ import annotations

from ..config import RunConfig
from .base import Backend


def make_backend(cfg: RunConfig, generating: bool = True) -> Backend:
    """The configured backend; `generating=False` when only its identity and prompt rendering are needed (a dry
    run), so an engine that is not installed on this machine (vLLM on a login node) is not required."""
    model = cfg.model
    if model.backend == "hf":
        from .hf import HFBackend

        return HFBackend(model, cfg.generation)
    if model.backend == "vllm":
        from .vllm import VLLMBackend

        return VLLMBackend(model, cfg.generation, require_engine=generating)
    if model.backend == "openai":
        from .openai_server import OpenAIServerBackend

        return OpenAIServerBackend(model, cfg.profile.generation_bad_request_retries)
    from .replay import ReplayBackend

    return ReplayBackend(model)
