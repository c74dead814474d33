"""The offline smoke model `builtin:tiny-harmony`: a real transformers model directory built on this machine.

A byte-level tokenizer with the Harmony special tokens, a Harmony-style chat template written for this project,
and a 2-layer Llama trained for a few seconds to emit the analysis/final channel structure. It is loaded through
the same `from_pretrained` path as a real model. Its answers are canned phrases; some outputs run out of tokens
or lose the final channel, which exercises the no-answer policies.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from pathlib import Path

from .sources import cache_root

BUILTIN_PREFIX = "builtin:"
NAME = "tiny-harmony"

SPECIAL_TOKENS = ["<|endoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>"]

CHAT_TEMPLATE = """\
{#- Harmony-style template written for the llm-jp eval harness's tiny test model. -#}
{%- set effort = reasoning_effort if reasoning_effort is defined and reasoning_effort else "medium" -%}
{%- set today = conversation_start_date if conversation_start_date is defined and conversation_start_date else strftime_now("%Y-%m-%d") -%}
<|start|>system<|message|>You are a tiny model that exists to test an evaluation harness.
Date of this conversation: {{ today }}

Reasoning: {{ effort }}

Channels you may write to: analysis, final.<|end|>
{%- for message in messages -%}
{%- if message.role == "system" -%}
<|start|>developer<|message|># Instructions

{{ message.content }}<|end|>
{%- elif message.role == "user" -%}
<|start|>user<|message|>{{ message.content }}<|end|>
{%- elif message.role == "assistant" -%}
<|start|>assistant<|channel|>final<|message|>{{ message.content }}<|end|>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}"""

# Canned outputs the tiny model learns; the structure matters, not the words.
_THOUGHTS = {"low": ["ok.", "short."], "medium": ["Let me think about it.", "I check the question."],
             "high": ["Let me think about it step by step, then check each part again.",
                      "I read the question twice and weigh two ways to answer before I decide."]}
_ANSWERS_JA = ["はい、お答えします。", "承知しました。要点をまとめます。", "次のとおりです。"]
_ANSWERS_EN = ["Here is my answer.", "Sure, in short:", "The answer follows."]
_QUESTIONS = ["日本の首都はどこですか？", "おすすめの本を教えてください。", "Explain gravity briefly.",
              "Write a short poem.", "天気について話してください。", "What is two plus two?"]

BUILD_VERSION = "1"


def is_builtin(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX)


def builtin_path(path: str) -> Path:
    """Directory of a builtin model, built on first use (a few seconds on a CPU)."""
    name = path[len(BUILTIN_PREFIX):]
    from .errors import UserError

    if name != NAME:
        raise UserError(f"model.path: unknown builtin model {name!r} (available: {BUILTIN_PREFIX}{NAME})")
    digest = hashlib.sha256((BUILD_VERSION + CHAT_TEMPLATE).encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{NAME}-{digest}"
    if not (target / "config.json").is_file():
        build(target)
    return target


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|return|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _examples(tokenizer, rng: random.Random) -> list[tuple[list[int], int]]:
    """(token ids, length of the prompt part) for training: prompt → analysis + final."""
    from .tasks import load_spec, load_task, task_names

    questions = list(_QUESTIONS)
    systems = [None]
    for name in task_names():
        task = load_task(load_spec(name), "sample", {})
        systems.append(task.system_prompt)
        questions += [t for item in task.items for t in item.turns]
    examples = []
    for _ in range(240):
        effort = rng.choice(list(_THOUGHTS))
        system = rng.choice(systems)
        question = rng.choice(questions)
        history = []
        if rng.random() < 0.4:
            history = [rng.choice(questions), rng.choice(_ANSWERS_JA + _ANSWERS_EN)]
        messages = ([{"role": "system", "content": system}] if system else [])
        if history:
            messages += [{"role": "user", "content": history[0]}, {"role": "assistant", "content": history[1]}]
        messages.append({"role": "user", "content": question})
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                               reasoning_effort=effort, conversation_start_date="2026-01-01")
        answers = _ANSWERS_EN if question.isascii() else _ANSWERS_JA
        target = (f"<|channel|>analysis<|message|>{rng.choice(_THOUGHTS[effort])}<|end|>"
                  f"<|start|>assistant<|channel|>final<|message|>{rng.choice(answers)}<|return|>")
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        examples.append((p_ids + t_ids, len(p_ids)))
    return examples


def build(target: Path, steps: int = 200) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same weights on every machine
    try:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                             bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
        examples = _examples(tokenizer, random.Random(0))
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rng = random.Random(1)
        model.train()
        for _ in range(steps):
            batch = rng.sample(examples, 8)
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, prompt_len) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, prompt_len: len(ids)] = torch.tensor(ids[prompt_len:])
                mask[row, : len(ids)] = 1
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target) if not target.exists() else None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
