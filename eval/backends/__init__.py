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

        return HFBackend(model, cfg.generation, cfg.profile)
    if model.backend == "vllm":
        from .vllm import VLLMBackend

        return VLLMBackend(model, cfg.generation, require_engine=generating, profile=cfg.profile)
    if model.backend == "openai":
        from .openai_server import OpenAIServerBackend

        return OpenAIServerBackend(model, cfg.profile.generation_bad_request_retries, require_key=generating)
    from .replay import ReplayBackend

    return ReplayBackend(model)


def announce_format(cfg: RunConfig, backend: Backend) -> dict[str, str] | None:
    """Print what was decided about the model's reasoning format and prompts (local engines: `ModelFormat`); the
    facts for the manifest."""
    fmt = getattr(backend, "format", None)
    line = fmt.describe() if fmt is not None else getattr(backend, "describe_format", lambda: None)()
    if line:
        print(f"{cfg.model.path}: {line}")
    return fmt.facts() if fmt is not None else None
