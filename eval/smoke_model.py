"""The offline smoke model `builtin:tiny-harmony`: a real transformers model directory built on this machine.

A byte-level tokenizer with the Harmony special tokens, a Harmony-style chat template written for this project,
and a 2-layer Llama trained on one CPU thread (under a minute) on a fixed corpus of its own
(`resources/smoke_corpus.yaml`) to emit the analysis/final channel structure. It is loaded through the same
`from_pretrained` path as a real model. Its answers are canned phrases; some outputs run out of tokens, which
exercises the no-answer policies. The cache folder is named by a hash of the corpus and of this file (template and
training recipe), so changing either builds a new model and no cached model ever stands for another recipe.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import progress
from .errors import UserError
from .sources import cache_root
from .yaml_limits import read_yaml

BUILTIN_PREFIX = "builtin:"
NAME = "tiny-harmony"
CORPUS = Path(__file__).resolve().parent / "resources" / "smoke_corpus.yaml"

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

def is_builtin(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX)


def builtin_path(path: str) -> Path:
    """Directory of a builtin model, built on first use (well under a minute on one CPU core)."""
    name = path[len(BUILTIN_PREFIX):]
    if name != NAME:
        raise UserError(f"model.path: unknown builtin model {name!r} (available: {BUILTIN_PREFIX}{NAME})")
    target = model_dir()
    if not (target / "config.json").is_file():
        build(target)
    return target


def _publish(staging: Path, target: Path) -> None:
    """Move a finished build into place. Two processes may build at once on a fresh cache: the one that finishes
    second finds the other's model there (the same weights) and keeps it."""
    try:
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise


def model_dir() -> Path:
    """Where the model of this corpus and this recipe (this file) lives in the cache."""
    digest = hashlib.sha256(CORPUS.read_bytes() + Path(__file__).read_bytes()).hexdigest()[:12]
    return cache_root() / "models" / f"{NAME}-{digest}"


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


def _examples(tokenizer, rng: random.Random, count: int = 240) -> list[tuple[list[int], int]]:
    """(token ids, length of the prompt part) for training: prompt → analysis + final, in the question's language."""
    corpus = read_yaml(CORPUS, "smoke model corpus")
    questions = [(q, lang) for lang, texts in corpus["questions"].items() for q in texts]
    answers, thoughts = corpus["answers"], corpus["thoughts"]
    examples = []
    for _ in range(count):
        effort = rng.choice(list(thoughts))
        system = rng.choice(corpus["systems"])
        question, lang = rng.choice(questions)
        messages = [{"role": "system", "content": system}] if system else []
        if rng.random() < 0.4:  # a second turn: an earlier question and its final answer
            earlier, earlier_lang = rng.choice(questions)
            messages += [{"role": "user", "content": earlier},
                         {"role": "assistant", "content": rng.choice(answers[earlier_lang])}]
        messages.append({"role": "user", "content": question})
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                               reasoning_effort=effort, conversation_start_date="2026-01-01")
        target = (f"<|channel|>analysis<|message|>{rng.choice(thoughts[effort])}<|end|>"
                  f"<|start|>assistant<|channel|>final<|message|>{rng.choice(answers[lang])}<|return|>")
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        examples.append((p_ids + t_ids, len(p_ids)))
    return examples


def build(target: Path, steps: int = 200) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    print(f"building the smoke model {BUILTIN_PREFIX}{NAME} (first use only: {steps} training steps on one CPU thread, "
          f"under a minute) into {target}", file=sys.stderr, flush=True)
    started = time.monotonic()
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
        # batches of examples of similar length: little padding, so a step costs what its tokens cost
        examples = sorted(_examples(tokenizer, random.Random(0)), key=lambda example: len(example[0]))
        batches = [examples[i: i + 8] for i in range(0, len(examples), 8)]
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rng = random.Random(1)
        model.train()
        bar = progress.Bar("smoke model", "step", steps)
        for _ in range(steps):
            batch = rng.choice(batches)
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
            bar.update(1)
        bar.close()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _publish(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"smoke model built in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
