"""The model's own chat template, shared by the local engines (hf, vllm): render, hash, special tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..chat import HARMONY_MARKERS
from ..errors import UserError
from ..records import text_hash
from ..smoke_model import builtin_path, is_builtin


def resolve_model_path(path: str) -> str:
    if is_builtin(path):
        return str(builtin_path(path))
    local = Path(path).expanduser()
    if path.startswith((".", "/", "~")) and not local.exists():
        raise UserError(f"model.path: {path} does not exist")
    return str(local) if local.exists() else path


class ChatRenderer:
    def __init__(self, path: str, revision: str | None, trust_remote_code: bool, chat_template_kwargs: dict[str, Any]):
        from transformers import AutoTokenizer

        self.path = resolve_model_path(path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise UserError(f"model.path: cannot load a tokenizer from {path!r} ({str(e).splitlines()[0]}); "
                            "check the path or hub id, HF_TOKEN for gated models, and the network or HF cache") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"model.path: the tokenizer of {path!r} has no chat template; the harness renders every "
                            "prompt with the model's own template, so use a chat model or add chat_template.jinja")
        self.tokenizer.padding_side = "left"
        self.kwargs = chat_template_kwargs
        self.template_hash = text_hash(self.tokenizer.chat_template)
        vocab = self.tokenizer.get_vocab()
        self.special = {m: vocab[m] for m in HARMONY_MARKERS if m in vocab}
        self.strip_tokens = [t for t in (self.tokenizer.pad_token, self.tokenizer.eos_token, "<|endoftext|>") if t]

    def render(self, messages: list[dict[str, str | None]]) -> str:
        # An earlier turn without an answer (content null) is an empty assistant message to a chat template.
        messages = [{**m, "content": "" if m["content"] is None else m["content"]} for m in messages]
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **self.kwargs)
        except TypeError as e:
            raise UserError(f"model.chat_template_kwargs: the chat template rejected them ({e})") from None

    def encode(self, messages: list[dict[str, str]]) -> tuple[list[int], str]:
        text = self.render(messages)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"], text_hash(text)

    def eos_ids(self, configured: Any = None) -> list[int]:
        """End-of-output ids: the model's generation config, the tokenizer's eos, and Harmony's return/call."""
        ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        ids.update(self.special[m] for m in ("<|return|>", "<|call|>") if m in self.special)
        return sorted(ids)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False)
