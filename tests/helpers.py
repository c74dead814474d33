"""Helpers for tests: run the CLI in this process or in a subprocess (network blocked), read JSONL, read mock
counters."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def counters(server) -> dict:
    return server.state.snapshot()["counters"]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """`python -m eval ARGS` run in this process (`eval.cli.main`) from the repository root, with `env` added to the
    environment for the call; what it prints is captured as a subprocess's would be. The test session blocks the
    network as the subprocesses' netblock does (conftest). An unexpected exception propagates, so a bug shows its
    traceback in the test report.

    Use `run_cli` (a real process) only where the process is what is tested: signals, kill points, the exit code and
    output of the real entry point, what a process reads from its environment at start-up."""
    from eval import redact
    from eval.cli import main

    saved_secrets = set(redact._secrets)
    redact._secrets.clear()  # as in a fresh process: a test of redaction must not pass on an earlier test's secrets
    saved_env = {k: os.environ.get(k) for k in env or {}}
    saved_cwd = os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers.clear()  # as in a fresh process: the command's own logging set-up writes to the captured stderr
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(env or {})
        os.chdir(ROOT)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse: --help, usage errors
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(saved_cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        redact._secrets.clear()
        redact._secrets.update(saved_secrets)
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path = ROOT,
            network: bool = False, preload: str | None = None) -> subprocess.CompletedProcess:
    """`python -m eval ARGS` in a subprocess; the network is blocked unless `network`; `preload`: a module of tests/
    imported first (one that registers a kind of the tests'). For tests of the process itself; everything else uses
    `cli`."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(([] if network else [str(ROOT / "tests" / "netblock")]) + [str(ROOT)] +
                                             ([str(ROOT / "tests")] if preload else []))
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    command = ["-c", f"import sys, {preload}; from eval.cli import main; sys.exit(main(sys.argv[1:]))"] if preload else \
        ["-m", "eval"]
    return subprocess.run([sys.executable, *command, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


SECRET = "sk-test-SECRETKEY-0123456789abcdefABCDEF"  # a recognizable fake judge key


def smoke_args(out: Path, server, *extra: str) -> list[str]:
    """The smoke config pointed at an external mock server (so tests can count its requests)."""
    return ["run", "configs/smoke.yaml", "--out", str(out), "--set", "judge.mock=false", "--set", f"judge.base_url={server.url}",
            "--set", "judge.api_key_env=MOCK_JUDGE_KEY", *extra]


def popen_cli(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """A background `python -m eval` (network blocked); its output goes to `log` (never to an unread pipe)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "netblock"), str(ROOT)])
    full_env.update(env or {})
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "eval", *args], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def body_hash(judgment: dict) -> str:
    """How the mock server identifies the request behind a stored judgment (its whole body)."""
    from eval.judge.mock_server import request_hash

    return request_hash({"model": judgment["judge_model"], "messages": judgment["messages"], **judgment["params"]})


def stored(run_dir: Path, table: str) -> list[dict]:
    import sqlite3

    path = run_dir / "run.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=30)
    try:
        return [json.loads(r[0]) for r in db.execute(f"SELECT record FROM {table}")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def wait_until(predicate, timeout: float = 120, interval: float = 0.05) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class FakeVLLMEngine:
    """vLLM's `LLMEngine` as the vllm backend drives it: `add_request`, then `step` until nothing is unfinished. Each
    step finishes the oldest request, answered by `complete(prompt ids, params) -> (token ids, finish reason)`."""

    def __init__(self, complete):
        self.complete = complete
        self.queue: list[tuple[str, list[int], object]] = []
        self.added: list[tuple[list[int], object]] = []
        self.aborted: list[str] = []
        self.steps = 0

    def add_request(self, request_id: str, prompt: dict, params) -> None:
        self.queue.append((request_id, prompt["prompt_token_ids"], params))
        self.added.append((prompt["prompt_token_ids"], params))

    def has_unfinished_requests(self) -> bool:
        return bool(self.queue)

    def step(self) -> list:
        from types import SimpleNamespace

        self.steps += 1
        request_id, ids, params = self.queue.pop(0)
        tokens, reason = self.complete(ids, params)
        return [SimpleNamespace(request_id=request_id, finished=True,
                                outputs=[SimpleNamespace(token_ids=tokens, finish_reason=reason)])]

    def abort_request(self, request_ids: list[str]) -> None:
        self.aborted += request_ids
        self.queue = [q for q in self.queue if q[0] not in request_ids]


def install_fake_vllm(monkeypatch, llm_class=None) -> None:
    """Modules standing in for vllm (not installed in tests): `LLM`, `SamplingParams`, `TokensPrompt`,
    `RequestOutputKind`."""
    import types
    from types import SimpleNamespace

    vllm = types.ModuleType("vllm")
    vllm.LLM = llm_class
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.RequestOutputKind = SimpleNamespace(FINAL_ONLY="final_only")
    for name, module in (("vllm", vllm), ("vllm.inputs", inputs), ("vllm.sampling_params", sampling)):
        monkeypatch.setitem(sys.modules, name, module)


CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_chatml_model(folder: Path, answer: str = "OK", template: str = CHATML_TEMPLATE, markers: tuple = ()) -> Path:
    """A ChatML chat model (`<|im_start|>role\\n…<|im_end|>`, eos `<|im_end|>`, no Harmony tokens) that answers every
    prompt with `answer` and ends its message, built in a second: a byte-level tokenizer (plus `markers` as single
    tokens, e.g. `<think>`) and a one-layer Llama whose attention and MLP write nothing, so each next token is a fixed
    function of the current one (a bigram chain from the generation prompt's last newline through `answer` to
    `<|im_end|>`). Greedy and sampled decoding agree."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *markers]
    vocab = {token: i for i, token in enumerate(special)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(special)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    chain = ids("\n" + answer) + [tokenizer.eos_token_id]
    assert len(set(chain[:-1])) == len(chain) - 1, "each token of the answer may occur once (a bigram chain)"
    size = -(-len(vocab) // 4) * 4  # two attention heads of an even size
    config = LlamaConfig(vocab_size=size, hidden_size=size, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(size))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(size, size)
        head[tokenizer.eos_token_id, :] = 10.0  # any token not in the chain: end the message
        for current, following in zip(chain[:-1], chain[1:], strict=True):
            head[:, current] = 0.0
            head[following, current] = 10.0
        model.lm_head.weight.copy_(head)
    model.save_pretrained(folder)
    return folder


def assert_valid_summary(path: Path):
    """`path` meets docs/summary.schema.json (checked by a JSON Schema validator) and the model, and the model writes
    it back byte for byte; returns the `RunSummary`."""
    from eval.results import RunSummary

    return assert_valid_result(path, RunSummary)


def assert_valid_result(path: Path, kind):
    """`path` meets the JSON Schema in docs/ of the result type `kind` (checked by a JSON Schema validator) and the
    model, and the model writes it back byte for byte; returns the result."""
    import jsonschema

    from eval.results import SCHEMA_FILES, read_result

    name = next(name for name, result in SCHEMA_FILES.items() if result is kind)
    schema = json.loads((ROOT / "docs" / name).read_text())
    data = json.loads(path.read_text())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    assert errors == []
    result = read_result(path, kind)
    assert json.dumps(result.dump(), ensure_ascii=False, indent=2) + "\n" == path.read_text()
    return result
