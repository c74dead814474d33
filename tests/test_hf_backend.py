"""The transformers backend on the tiny model, CPU: batching never changes an output, the chat template carries the
reasoning effort, Harmony parsing from token ids, and an OOM halves the batch without losing an item."""

from __future__ import annotations

import pytest
import torch

from eval.backends.base import GenerationRequest, Sampling, request_seed
from eval.backends.hf import HFBackend
from eval.chat import parse_output, turn_messages
from eval.config import GenerationConfig, HFModel, ReasoningFormat
from eval.records import Slot

QUESTIONS = ["京都の秋を紹介する短い旅行記事を書いてください。", "Explain gravity briefly.", "数学の問題です。3+4は？",
             "Write a haiku about the sea, please, with a title and an explanation of the imagery.", "短い質問"]


def backend(engine: str = "static", batch_size="auto", effort: str = "medium") -> HFBackend:
    model = HFModel(backend="hf", path="builtin:tiny-harmony", dtype="float32", device="cpu", engine=engine,
                    chat_template_kwargs={"reasoning_effort": effort, "conversation_start_date": "2026-07-15"})
    return HFBackend(model, GenerationConfig(max_new_tokens=40, batch_size=batch_size))


def requests(temperature: float, turn2: bool = False) -> list[GenerationRequest]:
    out = []
    for i, q in enumerate(QUESTIONS):
        questions = [q, "もう少し詳しく。"] if turn2 else [q]
        finals = ["はい、お答えします。"] if turn2 else []
        slot = Slot(1, "t", str(i), 2 if turn2 else 1)
        out.append(GenerationRequest(slot, turn_messages("あなたは誠実なアシスタントです。", questions, finals),
                                     Sampling(temperature, 0.95 if temperature else None, 40), request_seed(1234, slot)))
    return out


def generate(b: HFBackend, reqs: list[GenerationRequest]) -> dict[str, tuple[str, str]]:
    results = {}
    b.generate(reqs, lambda r: results.__setitem__(r.request.slot.item_id, (r.raw, r.parsed.status)))
    assert sorted(results) == sorted(r.slot.item_id for r in reqs)
    return results


@pytest.mark.parametrize("engine", ["static", "dynamic", "paged"])
@pytest.mark.parametrize("turn2", [False, True])
def test_batched_greedy_equals_one_by_one(smoke_model_dir, engine, turn2):
    reqs = requests(0.0, turn2)
    batched = generate(backend(engine, batch_size=len(reqs)), reqs)
    alone = backend(engine, batch_size=1)
    for r in reqs:
        assert generate(alone, [r])[r.slot.item_id] == batched[r.slot.item_id], (engine, r.slot)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_static_rounds_of_growing_length_change_no_output(smoke_model_dir, monkeypatch, temperature):
    reqs = requests(temperature, turn2=True)
    whole = generate(backend("static", batch_size=2), reqs)
    calls = []
    b = backend("static", batch_size=2)
    real = b._run_batch

    def recorded(batch, segment):
        calls.append((segment, [len(row.generated) for row in batch]))
        return real(batch, segment)

    b.first_segment = 4
    monkeypatch.setattr(b, "_run_batch", recorded)
    assert generate(b, reqs) == whole
    assert [segment for segment, _ in calls][:3] == [4, 4, 4] and {segment for segment, _ in calls} >= {4, 8, 16}
    assert all(min(generated) > 0 for segment, generated in calls if segment > 4)  # later rounds run rows on


def test_each_static_round_allocates_only_its_own_length(smoke_model_dir):
    b = backend("static", batch_size=8)
    b._load()
    b.first_segment = 4
    lengths = []  # the static cache's length in each generate call, seen at its prefill

    def record(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            lengths.append((kwargs.get("past_key_values") or kwargs.get("cache")).get_max_length())

    b.model.register_forward_pre_hook(record, with_kwargs=True)
    generate(b, requests(0.0))
    first_call, lengths[:] = list(lengths), []
    # one prompt width; rounds of 4, 8 and 16 new tokens, then the last 12 of the 40-token budget in the length
    # the round before had (transformers reuses the longest length so far, so the compiled step is reused)
    assert [length - first_call[0] for length in first_call] == [0, 4, 12, 12]
    generate(b, requests(0.0)[:2])
    assert lengths[0] == first_call[0]  # a new call starts from its own first round, not the earlier call's last


@pytest.mark.parametrize("engine", ["static", "dynamic"])
def test_sampled_output_depends_on_the_request_seed_not_on_the_batch(smoke_model_dir, engine):
    reqs = requests(1.0)
    batched = generate(backend(engine, batch_size=len(reqs)), reqs)
    reordered = generate(backend(engine, batch_size=2), list(reversed(reqs)))
    assert batched == reordered
    alone = generate(backend(engine, batch_size=1), [reqs[3]])
    assert alone[reqs[3].slot.item_id] == batched[reqs[3].slot.item_id]
    reseeded = [GenerationRequest(r.slot, r.messages, r.sampling, r.seed + 1) for r in reqs]
    assert generate(backend(engine), reseeded) != batched  # a different seed samples differently


@pytest.mark.parametrize("engine", ["static", "paged"])
def test_a_stop_ends_the_generation_in_flight_at_its_next_step(smoke_model_dir, engine):
    import threading

    b = backend(engine, batch_size=5)
    b._load()
    stop, calls = threading.Event(), []

    def count(module, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            stop.set()  # a signal arrives while the model is running

    b.model.register_forward_pre_hook(count, with_kwargs=True)
    reqs = [GenerationRequest(r.slot, r.messages, Sampling(0.0, None, 400), r.seed) for r in requests(0.0)]
    seen = []
    b.generate(reqs, seen.append, stop)
    # 400 new tokens would be 400 steps: static ends at its next step, paged at its collector's next poll (0.1 s)
    assert seen == [] and len(calls) <= (8 if engine == "static" else 200)


def test_row_sampler_samples_the_tempered_distribution():
    from eval.backends.hf_decode import RowSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    probs = torch.softmax(logits / 0.7, dim=-1)[0]
    counts = torch.zeros(4)
    for seed in range(4000):
        sampler = RowSampler([0.7], [None], [seed], prompt_len=0, device="cpu")
        counts[int(sampler(torch.zeros((1, 0), dtype=torch.long), logits.clone()).argmax())] += 1
    assert torch.allclose(counts / counts.sum(), probs, atol=0.03)
    top_p = RowSampler([1.0], [0.5], [0], 0, "cpu")._top_p(torch.log(torch.tensor([[0.6, 0.3, 0.1]])))
    assert torch.isinf(top_p[0, 1:]).all() and torch.isfinite(top_p[0, 0])


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_and_fixed_date_reach_the_rendered_prompt(smoke_model_dir, effort):
    b = backend(effort=effort)
    messages = turn_messages("sys", ["q"], [])
    rendered = b.chat.render(messages)
    assert f"Reasoning: {effort}\n" in rendered and "2026-07-15" in rendered
    assert rendered == backend(effort=effort).chat.render(messages)
    assert rendered.endswith("<|start|>assistant")
    assert b.identity()["chat_template_kwargs"]["reasoning_effort"] == effort


def test_without_a_date_the_template_renders_today(smoke_model_dir):
    import datetime

    model = HFModel(backend="hf", path="builtin:tiny-harmony", chat_template_kwargs={"reasoning_effort": "low"})
    b = HFBackend(model, GenerationConfig())
    assert datetime.date.today().isoformat() in b.chat.render([{"role": "user", "content": "q"}])


HARMONY = ReasoningFormat(format="harmony")
CASES = [
    ("<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>Answer.<|return|>", False, "Answer.", "think", "ok"),
    ("<|channel|>analysis<|message|>a1<|end|><|start|>assistant<|channel|>analysis<|message|>a2<|end|>"
     "<|start|>assistant<|channel|>final<|message|>Two.<|end|>", False, "Two.", "a1\n\na2", "ok"),
    ("<|channel|>final<|message|>Direct.<|return|>", False, "Direct.", "", "ok"),
    ("<|channel|>analysis<|message|>long thinking that never", True, None, "long thinking that never", "truncated"),
    ("<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>final<|message|>half an ans", True, "half an ans", "x", "truncated"),  # the partial answer is kept
    ("<|channel|>analysis<|message|>only thoughts<|end|><|return|>", False, None, "only thoughts", "no_final"),
    ("plain text without channels<|return|>", False, None, "", "no_final"),
    ("<|channel|>commentary to=functions.x <|constrain|>json<|message|>{}<|call|>", False, None, "", "no_final"),
]


@pytest.mark.parametrize("text,hit_limit,final,reasoning,status", CASES)
def test_harmony_parsing_from_token_ids(smoke_model_dir, text, hit_limit, final, reasoning, status):
    b = backend()
    ids = b.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any(i < 8 for i in ids)  # the markers are single special tokens of the test tokenizer
    parsed = parse_output(b.chat.decode(ids), hit_limit, HARMONY, b.chat.special_tokens)
    assert (parsed.final, parsed.reasoning, parsed.status) == (final, reasoning, status)


def test_backend_result_from_token_ids_detects_limit_and_padding(smoke_model_dir):
    b = backend()
    b._load()
    req = requests(0.0)[0]
    tok = b.tokenizer
    ids = tok("<|channel|>final<|message|>Hi<|return|>", add_special_tokens=False)["input_ids"] + [tok.pad_token_id] * 3
    assert b._result(req, [1], ids, "h", 0.0).parsed.status == "ok"
    long = tok("<|channel|>analysis<|message|>" + "x" * 60, add_special_tokens=False)["input_ids"]
    result = b._result(req, [1], long, "h", 0.0)
    assert (result.parsed.status, result.finish_reason, result.tokens_out) == ("truncated", "length", 40)


@pytest.mark.parametrize("text,final,reasoning,status", [
    ("<think>hmm</think>\nThe answer.", "\nThe answer.", "hmm", "ok"),  # kept as written; the profile may strip it
    ("reasoning only because the template opened it</think>Done", "Done", "reasoning only because the template opened it", "ok"),
    ("<think>never closed", None, "never closed", "no_final"),
    ("No thinking at all.", "No thinking at all.", "", "ok"),
])
def test_think_marker_models(text, final, reasoning, status):
    parsed = parse_output(text, False, ReasoningFormat(format="think"), ["<|endoftext|>"])
    assert (parsed.final, parsed.reasoning, parsed.status) == (final, reasoning, status)
    custom = ReasoningFormat(format="think", think_start="[T]", think_end="[/T]")
    assert parse_output("[T]r[/T]a", False, custom).final == "a"


def test_oom_halves_the_batch_and_loses_nothing(smoke_model_dir, monkeypatch):
    b = backend(batch_size=4)
    real = b._run_batch
    sizes = []

    def flaky(batch, segment):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(batch, segment)

    monkeypatch.setattr(b, "_run_batch", flaky)
    reqs = requests(0.0)
    seen = []
    b.generate(reqs, lambda r: seen.append(r.request.slot.item_id))
    assert sorted(seen) == sorted(r.slot.item_id for r in reqs) and len(seen) == len(set(seen))
    assert sizes == [4, 2, 2, 1]  # 4 fails, halves run; later batches start at the size that fit
    assert b.max_batch == 2


def test_auto_batch_size_comes_from_memory_and_kv_bytes():
    from types import SimpleNamespace

    from eval.backends.hf_engines import auto_batch_size, kv_bytes_per_token

    shape = SimpleNamespace(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, hidden_size=4096, head_dim=None)
    per_token = kv_bytes_per_token(shape, 2)
    assert per_token == 512 * 1024  # llm-jp-4-8b: 0.5 MiB of KV cache per token
    assert auto_batch_size(90 * 2**30, per_token, 16384 + 512, 196608, 256) == 10
    assert auto_batch_size(10**6, per_token, 1000, 100, 256) == 1


def test_auto_engine_runs_long_budgets_paged_on_cuda_only():
    from eval.backends.hf_engines import LONG_BUDGET, choose_engine

    assert choose_engine("auto", "cuda", 16384) == "paged"
    assert choose_engine("auto", "cuda:1", LONG_BUDGET) == "paged"
    assert choose_engine("auto", "cuda", 1024) == "static"
    assert choose_engine("auto", "cpu", 16384) == "static"
    assert choose_engine("dynamic", "cuda", 16384) == "dynamic"


def test_cache_budget_counts_memory_torch_holds_but_does_not_use(monkeypatch):
    from eval.backends.hf_engines import CPU_CACHE_BYTES, cache_budget

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 30 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 20 * gib)
    assert cache_budget("cuda", 0.5) == 10 * gib  # (10 free + 10 cached by torch) x memory_fraction
    assert cache_budget("cpu", 0.9) == CPU_CACHE_BYTES  # never a share of host RAM


def test_paged_cache_config_follows_memory_fraction_on_cuda_and_stays_small_on_cpu():
    from eval.backends.hf_engines import continuous_batching_config

    on_cuda = continuous_batching_config("cuda", 0.7, "auto", 512 * 1024, [16384 + 300] * 10)
    assert (on_cuda.max_memory_percent, on_cuda.num_blocks, on_cuda.max_requests_per_batch) == (0.7, None, 10)
    assert on_cuda.default_compile_level == 0 and on_cuda.use_cuda_graph is None  # graphs where transformers can
    assert continuous_batching_config("cuda", 0.7, "on", 512 * 1024, [100]).default_compile_level > 0
    off = continuous_batching_config("cuda", 0.7, "off", 512 * 1024, [100])
    assert off.default_compile_level == 0 and off.use_cuda_graph is False
    on_cpu = continuous_batching_config("cpu", 0.9, "auto", 512, [300, 200, 100])
    assert on_cpu.num_blocks == 4 and on_cpu.default_compile_level == 0  # 2 + 1 + 1 blocks of 256 tokens
    assert continuous_batching_config("cpu", 0.9, "auto", 512, [300] * 8, max_rows=3).max_requests_per_batch == 3


def test_paged_engine_cache_in_tests_is_a_few_megabytes(smoke_model_dir, monkeypatch):
    from transformers.generation.continuous_batching import continuous_api

    sizes = []

    class Recorded(continuous_api.PagedAttentionCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sizes.append(sum(t.nbytes for value in vars(self).values()
                             for t in (value if isinstance(value, list) else [value]) if isinstance(t, torch.Tensor)))

    monkeypatch.setattr(continuous_api, "PagedAttentionCache", Recorded)
    reqs = requests(0.0)
    assert len(generate(backend("paged"), reqs)) == len(reqs)
    assert sizes and max(sizes) < 8 * 2**20, sizes


def test_loading_the_weights_is_said_before_and_after(smoke_model_dir, capsys):
    """A real model's weights take a while to load: the run says so instead of falling silent."""
    b = backend()
    b._load()
    err = capsys.readouterr().err
    assert "model: loading the weights of builtin:tiny-harmony (float32) onto cpu…" in err
    assert "model: loaded in " in err
