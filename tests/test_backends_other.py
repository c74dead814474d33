"""The openai (any compatible server), replay and vllm backends."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
from helpers import FakeVLLMEngine, counters, install_fake_vllm

from eval.backends.base import GenerationRequest, Sampling
from eval.config import MockSettings, OpenAIModel, ReplayModel
from eval.errors import UserError
from eval.records import Slot


def _requests(n: int, max_new: int = 256) -> list[GenerationRequest]:
    return [GenerationRequest(Slot(1, "t", str(i), 1), [{"role": "user", "content": f"question {i}"}],
                              Sampling(0.7, 0.95, max_new), 100 + i) for i in range(n)]


def _collect(backend, reqs):
    results = {}
    backend.generate(reqs, lambda r: results.__setitem__(r.request.slot.item_id, r))
    return results


def test_openai_backend_bounds_concurrency_round_robins_and_splits_reasoning(mock_server):
    from eval.backends.openai_server import OpenAIServerBackend

    single = mock_server(settings=MockSettings(latency_s=0.2))
    cfg = OpenAIModel(backend="openai", path="mock-gen", base_urls=[single.url], concurrency=3)
    assert len(_collect(OpenAIServerBackend(cfg), _requests(12))) == 12
    assert counters(single)["max_in_flight"] == 3  # the bound is reached and never exceeded

    servers = [mock_server(settings=MockSettings(latency_s=0.05)) for _ in range(2)]
    cfg = OpenAIModel(backend="openai", path="mock-gen", base_urls=[s.url for s in servers], concurrency=4,
                      chat_template_kwargs={"reasoning_effort": "high"})
    results = _collect(OpenAIServerBackend(cfg), _requests(12))
    assert len(results) == 12
    assert [counters(s)["requests"] for s in servers] == [6, 6]
    r = results["0"]
    assert r.parsed.status == "ok" and r.parsed.final.startswith("Mock answer") and "Reasoning (high)" in r.parsed.reasoning
    assert r.parsed.final not in r.parsed.reasoning


def test_every_backend_returns_once_the_run_stops(mock_server, smoke_model_dir, monkeypatch):
    import threading

    from eval.backends.openai_server import OpenAIServerBackend
    from eval.backends.vllm import VLLMBackend
    from eval.config import GenerationConfig, VLLMModel

    server = mock_server(settings=MockSettings(latency_s=0.05))
    openai_backend = OpenAIServerBackend(OpenAIModel(backend="openai", path="mock-gen", base_urls=[server.url],
                                                     concurrency=2))
    install_fake_vllm(monkeypatch, _FakeLLM)
    vllm_backend = VLLMBackend(VLLMModel(backend="vllm", path="builtin:tiny-harmony"), GenerationConfig())
    for backend, most in ((openai_backend, 2), (vllm_backend, 1)):  # the requests in flight when it stopped
        stop, seen = threading.Event(), []

        def store(result, seen=seen, stop=stop):
            seen.append(result.request.slot.item_id)
            stop.set()  # the run stops once the first answer is stored

        backend.generate(_requests(6), store, stop)
        assert 1 <= len(seen) <= most, backend.name
    assert counters(server)["requests"] == 2  # no request started after the stop
    engine = vllm_backend.llm.llm_engine
    assert engine.steps == 1 and len(engine.aborted) == 5 and not engine.has_unfinished_requests()


def test_openai_backend_sends_effort_both_ways_and_marks_truncation(mock_server, monkeypatch):
    from eval.backends import openai_server
    from eval.backends.openai_server import OpenAIServerBackend

    server = mock_server()
    cfg = OpenAIModel(backend="openai", path="mock-gen", base_urls=[server.url], chat_template_kwargs={"reasoning_effort": "low"})
    sent = []
    real = openai_server.openai.resources.chat.AsyncCompletions.create

    async def spy(self, **kwargs):
        sent.append(kwargs)
        return await real(self, **kwargs)

    monkeypatch.setattr(openai_server.openai.resources.chat.AsyncCompletions, "create", spy)
    results = _collect(OpenAIServerBackend(cfg), _requests(2, max_new=3))
    assert sent[0]["reasoning_effort"] == "low"
    assert sent[0]["extra_body"] == {"chat_template_kwargs": {"reasoning_effort": "low"}}
    assert sent[0]["seed"] in (100, 101) and sent[0]["max_tokens"] == 3
    assert {r.parsed.status for r in results.values()} == {"truncated"}
    assert all(r.parsed.final is None for r in results.values())


def test_reasoning_content_field_and_empty_content():
    from eval.backends.openai_server import parse_message

    message = SimpleNamespace(content="Final.", model_extra={"reasoning_content": "thoughts"})
    assert parse_message(message, "stop") == parse_message(SimpleNamespace(content="Final.", reasoning="thoughts"), "stop")
    assert parse_message(message, "stop").reasoning == "thoughts"
    assert parse_message(SimpleNamespace(content=None, reasoning="only"), "stop").status == "no_final"


def test_replay_reads_harness_generations_and_fastchat_answers(tmp_path):
    from eval.backends.replay import ReplayBackend

    harness = tmp_path / "generations.jsonl"
    harness.write_text(json.dumps({"task": "t", "item_id": "0", "turn": 1, "round": 1, "final": "kept", "status": "ok",
                                   "reasoning": "r", "raw": "raw"}) + "\n")
    results = _collect(ReplayBackend(ReplayModel(backend="replay", path=str(harness))), _requests(2))
    assert results["0"].parsed.final == "kept" and results["0"].parsed.reasoning == "r"
    assert results["1"].parsed.status == "error" and "no answer" in results["1"].error

    fastchat = tmp_path / "model_answer.jsonl"
    fastchat.write_text(json.dumps({"question_id": 0, "answer_id": "x", "model_id": "m",
                                    "choices": [{"index": 0, "turns": ["first", "second"]}], "tstamp": 0}) + "\n")
    reqs = _requests(1) + [GenerationRequest(Slot(2, "t", "0", 2), [], Sampling(0, None, 10), 1)]
    results = {(r.request.slot.round, r.request.slot.turn): r for r in []}
    backend = ReplayBackend(ReplayModel(backend="replay", path=str(fastchat)))
    backend.generate(reqs, lambda r: results.__setitem__((r.request.slot.round, r.request.slot.turn), r))
    assert results[(1, 1)].parsed.final == "first" and results[(2, 2)].parsed.final == "second"
    with pytest.raises(UserError, match="not found"):
        ReplayBackend(ReplayModel(backend="replay", path=str(tmp_path / "missing.jsonl")))


def test_replay_refuses_a_status_that_is_not_a_generation_status(tmp_path):
    from eval.backends.replay import ReplayBackend

    harness = tmp_path / "generations.jsonl"
    row = {"task": "t", "item_id": "0", "turn": 1, "round": 1, "final": "kept", "status": "ok"}
    harness.write_text(json.dumps(row) + "\n" + json.dumps({**row, "item_id": "1", "status": "done"}) + "\n")
    with pytest.raises(UserError, match=r"line 2: status 'done' is not a generation status \(one of ok, truncated, "):
        ReplayBackend(ReplayModel(backend="replay", path=str(harness)))


class _FakeLLM:
    """vLLM's `LLM`: the engine arguments it was made with, and its engine. The first request answers in full, the
    others are cut off at the limit."""

    made: list = []

    def __init__(self, **engine):
        from eval.smoke_model import build_tokenizer

        _FakeLLM.made.append(engine)
        tok = build_tokenizer()
        texts = ["<|channel|>analysis<|message|>t<|end|><|start|>assistant<|channel|>final<|message|>ans<|return|>",
                 "<|channel|>analysis<|message|>cut"]
        answers = iter([(tok(texts[0], add_special_tokens=False)["input_ids"], "stop")])
        cut = (tok(texts[1], add_special_tokens=False)["input_ids"], "length")
        self.llm_engine = FakeVLLMEngine(lambda ids, params: next(answers, cut))


def test_vllm_backend_renders_token_ids_with_per_request_params_and_parses_harmony(smoke_model_dir, monkeypatch):
    install_fake_vllm(monkeypatch, _FakeLLM)
    from eval.backends.vllm import VLLMBackend
    from eval.config import GenerationConfig, VLLMModel

    cfg = VLLMModel(backend="vllm", path="builtin:tiny-harmony", tensor_parallel_size=2, data_parallel_size=2,
                    chat_template_kwargs={"reasoning_effort": "high", "conversation_start_date": "2026-07-15"})
    backend = VLLMBackend(cfg, GenerationConfig())
    _FakeLLM.made = []
    results = _collect(backend, _requests(2))
    engine, = _FakeLLM.made
    assert engine["tensor_parallel_size"] == 2 and engine["data_parallel_size"] == 2
    (prompt, first), (_, second) = backend.llm.llm_engine.added
    rendered = backend.chat.tokenizer.decode(prompt)
    assert "Reasoning: high" in rendered and rendered.endswith("<|start|>assistant")
    assert [first.seed, second.seed] == [100, 101] and first.temperature == 0.7 and first.skip_special_tokens is False
    assert first.output_kind == "final_only"  # one output per request, when it has finished
    assert results["0"].parsed.final == "ans" and results["1"].parsed.status == "truncated"


def test_vllm_backend_stores_each_answer_as_it_finishes_and_aborts_the_rest_on_a_stop(smoke_model_dir, monkeypatch):
    install_fake_vllm(monkeypatch, _FakeLLM)
    from eval.backends.vllm import VLLMBackend
    from eval.config import GenerationConfig, VLLMModel

    backend = VLLMBackend(VLLMModel(backend="vllm", path="builtin:tiny-harmony"), GenerationConfig())
    seen = []

    def store(result):
        seen.append((result.request.slot.item_id, backend.llm.llm_engine.steps))
        if len(seen) == 2:
            raise KeyboardInterrupt  # the run stops while requests are still in the engine

    with pytest.raises(KeyboardInterrupt):
        backend.generate(_requests(5), store)
    assert seen == [("0", 1), ("1", 2)]  # each stored at the step that finished it, not after the last
    assert backend.llm.llm_engine.aborted == ["llmjp-eval-3", "llmjp-eval-4", "llmjp-eval-5"]
    assert not backend.llm.llm_engine.has_unfinished_requests()


class _HarmonyLLM:
    """vLLM's `LLM` answering every prompt like a Harmony model: an analysis message (vLLM stops at its `<|end|>`),
    then, asked again with it appended, a final one."""

    def __init__(self, **engine):
        from eval.smoke_model import build_tokenizer

        tok = build_tokenizer()
        analysis = tok("<|channel|>analysis<|message|>Thinking.<|end|>", add_special_tokens=False)["input_ids"]
        final = tok("<|start|>assistant<|channel|>final<|message|>An answer.<|return|>", add_special_tokens=False)["input_ids"]

        def complete(ids, params):
            if ids[-len(analysis):] == analysis:
                return final[:params.max_tokens], "stop"
            return analysis, "stop"

        self.llm_engine = FakeVLLMEngine(complete)


def test_a_vllm_run_stores_its_answers_and_a_dry_run_of_it_needs_no_vllm(smoke_model_dir, tmp_path, monkeypatch):
    import re

    import yaml
    from helpers import ROOT, cli

    config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    config["model"] = {"backend": "vllm", "path": "builtin:tiny-harmony", "dtype": "float32",
                       "chat_template_kwargs": config["model"]["chat_template_kwargs"]}
    path, out = tmp_path / "vllm.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config))
    install_fake_vllm(monkeypatch, _HarmonyLLM)
    result = cli("run", str(path), "--out", str(out), "--rounds", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert generations and {(g["status"], g["final"]) for g in generations} == {("ok", "An answer.")}
    monkeypatch.setitem(sys.modules, "vllm", None)  # a login node: no vLLM
    estimate = cli("run", str(path), "--out", str(out), "--rounds", "1", "--dry-run")
    assert estimate.returncode == 0, estimate.stderr[-2000:]
    assert re.search(r"^\s*total\s+0\s+0\s", estimate.stdout, re.M), estimate.stdout  # nothing left to generate or judge
    again = cli("run", str(path), "--out", str(out), "--rounds", "1")
    assert again.returncode == 2 and "vllm is not installed" in again.stderr  # a real run still says so at once


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    from eval.backends.vllm import VLLMBackend
    from eval.config import GenerationConfig, VLLMModel

    with pytest.raises(UserError, match=r"pip install -e \"\.\[vllm\]\""):
        VLLMBackend(VLLMModel(backend="vllm", path="x"), GenerationConfig())


def test_an_answer_past_the_reply_cap_is_dropped_unread_and_stored_as_failed():
    """A generation server's reply is read as the judge's is, within model.max_reply_bytes (chunked, no length
    said, so only reading tells): the oversized one ends as a failed answer naming the setting, the others arrive,
    and the run goes on."""
    from misbehaving_server import MisbehavingJudge, Streamed, completion

    from eval.backends.openai_server import OpenAIServerBackend

    def reply(n, body, headers):
        question = body["messages"][-1]["content"]
        if question == "question 1":
            huge = json.dumps(completion("x" * 50_000)).encode()
            return 200, Streamed(lambda: (huge[i:i + 4096] for i in range(0, len(huge), 4096)))
        return 200, completion(f"answer to {question}")

    server = MisbehavingJudge(reply)
    try:
        cfg = OpenAIModel(backend="openai", path="gen", base_urls=[server.url], max_reply_bytes=8192, max_retries=0)
        results = _collect(OpenAIServerBackend(cfg), _requests(3))
    finally:
        server.stop()
    assert {i: r.parsed.final for i, r in results.items() if i != "1"} == {"0": "answer to question 0", "2": "answer to question 2"}
    failed = results["1"]
    assert failed.parsed.status == "error" and "model.max_reply_bytes (8,192)" in failed.error, failed
