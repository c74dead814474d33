"""The real llm-jp-4 and gpt-oss tokenizers and chat templates (../shared/models): prompts equal the template's own
rendering with the configured kwargs and date on any day, kwarg typos are refused, real token sequences parse to
clean final answers, and every engine stops at the end of the final message with exact token counts.

Tiny random Llama models are built next to copies of the tokenizers; their logits are overridden by a script, so
each engine sees exactly the token sequence a real model would write."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT
from helpers import FakeVLLMEngine, install_fake_vllm

from eval.backends.base import GenerationRequest, Sampling
from eval.backends.hf import HFBackend
from eval.backends.template import ChatRenderer
from eval.chat import parse_output, turn_messages
from eval.config import GenerationConfig, HFModel, ReasoningFormat, VLLMModel
from eval.errors import UserError
from eval.records import Slot
from eval.tasks import load_spec, load_task

MODELS = ROOT.parent / "shared" / "models"
HARMONY_DATA = MODELS / "harmony-testdata"
DATE = "2026-07-15"
KWARGS = {"reasoning_effort": "low", "conversation_start_date": DATE}
NAMES = ["llm-jp-4", "gpt-oss"]


_BUILT: dict[str, Path] = {}


def build_model_dir(name: str, tmp_path_factory) -> Path:
    """A copy of the real tokenizer with a tiny random Llama saved beside it (built once per session)."""
    source = MODELS / f"{name}-tokenizer"
    if not source.is_dir():
        pytest.skip("../shared/models is absent")
    if name in _BUILT:
        return _BUILT[name]
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = tmp_path_factory.mktemp(name)
    for file in source.iterdir():
        shutil.copy(file, target / file.name)
    tokenizer = AutoTokenizer.from_pretrained(target)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(target)
    _BUILT[name] = target
    return target


@pytest.fixture(scope="session", params=NAMES)
def model_dir(request, tmp_path_factory) -> Path:
    return build_model_dir(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def llm_jp_dir(tmp_path_factory) -> Path:
    """One real tokenizer, for behaviour that does not depend on which."""
    return build_model_dir("llm-jp-4", tmp_path_factory)


@pytest.fixture(scope="session")
def gpt_oss_dir(tmp_path_factory) -> Path:
    return build_model_dir("gpt-oss", tmp_path_factory)


def with_template(model_dir: Path, folder: Path, template: str) -> Path:
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, folder / name)
    (folder / "chat_template.jinja").write_text(template)
    return folder


@pytest.fixture(scope="module", autouse=True)
def tokenizers_load_once():
    """Loading the real tokenizers takes seconds; every renderer of a folder here can share one."""
    from transformers import AutoTokenizer

    load, loaded = AutoTokenizer.from_pretrained, {}

    def cached(path, *args, **kwargs):
        if str(path) not in loaded:
            loaded[str(path)] = load(path, *args, **kwargs)
        return loaded[str(path)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AutoTokenizer, "from_pretrained", cached)
        yield


def renderer(path: Path, kwargs=None, unchecked=()) -> ChatRenderer:
    return ChatRenderer(str(path), None, False, dict(KWARGS if kwargs is None else kwargs), unchecked)


class FrozenClock:
    """Sets the day transformers' `strftime_now` sees (the template's own clock)."""

    def __init__(self, monkeypatch):
        import transformers.utils.chat_template_utils as utils

        self.monkeypatch, self.utils = monkeypatch, utils

    def set(self, day: str) -> None:
        fixed = datetime.datetime.fromisoformat(day)
        self.monkeypatch.setattr(self.utils, "datetime", type("FixedDatetime", (datetime.datetime,), {
            "now": classmethod(lambda cls, tz=None: fixed)}))


def mt_bench_messages(turn: int) -> list[dict[str, str]]:
    task = load_task(load_spec("mt_bench_ja"), "sample", {})
    item = task.items[0]
    finals = ["一つ目の答えです。"][: turn - 1]
    return turn_messages(task.system_prompt, item.turns[:turn], finals)


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("turn", [1, 2])
def test_prompt_ids_equal_the_templates_own_rendering_on_any_day(model_dir, turn, monkeypatch):
    messages = mt_bench_messages(turn)
    clock = FrozenClock(monkeypatch)
    clock.set(DATE)  # the template's own rendering, had it been run on the configured day
    chat = renderer(model_dir)
    expected = chat.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **KWARGS)
    expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
    for today in ("2026-11-27", "2031-02-03"):
        clock.set(today)
        ids, prompt_hash = renderer(model_dir).encode(messages)
        assert ids == list(expected), today
        assert prompt_hash == chat.encode(messages)[1]
    text = chat.render(messages)
    assert f"Current date: {DATE}\n" in text and "Reasoning: low\n" in text
    assert f"<|start|>developer<|message|># Instructions\n\n{messages[0]['content']}" in text
    assert text.endswith("<|start|>assistant")
    if turn == 2:  # the earlier answer goes back as a final message, and nothing else of it
        assert "<|start|>assistant<|channel|>final<|message|>一つ目の答えです。<|end|>" in text
        assert "analysis" not in text.split("<|start|>user")[1]


def test_gpt_oss_turn_two_matches_the_harmony_reference(gpt_oss_dir):
    reference = (HARMONY_DATA / "test_dropping_cot_by_default.txt").read_text()
    messages = turn_messages(None, ["What is 2 + 2?", "What about 9 / 2?"], ["2 + 2 equals 4."])
    rendered = renderer(gpt_oss_dir).render(messages)
    assert rendered.endswith(reference) and rendered.startswith("<|start|>system<|message|>")
    assert f"Current date: {DATE}\n" in rendered


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_each_effort_reaches_the_prompt(model_dir, effort):
    text = renderer(model_dir, {**KWARGS, "reasoning_effort": effort}).render(mt_bench_messages(1))
    assert f"Reasoning: {effort}\n" in text


def test_a_misspelt_or_ineffective_kwarg_is_refused_unless_opted_out(model_dir):
    with pytest.raises(UserError, match=r"^model\.chat_template_kwargs\.reasoning_efort: the chat template renders the same"):
        renderer(model_dir, {"reasoning_efort": "low", "conversation_start_date": DATE})
    with pytest.raises(UserError, match=r"model\.chat_template_kwargs\.show_tools"):
        renderer(model_dir, {**KWARGS, "show_tools": True})
    chat = renderer(model_dir, {**KWARGS, "show_tools": True}, unchecked=["show_tools"])
    assert "Reasoning: low\n" in chat.render(mt_bench_messages(1))
    with pytest.raises(UserError, match=r"unchecked_template_kwargs: 'show_tool' is not among"):
        renderer(model_dir, KWARGS, unchecked=["show_tool"])


def test_medium_effort_is_accepted_although_it_is_the_default(model_dir):
    renderer(model_dir, {**KWARGS, "reasoning_effort": "medium"})  # another value changes the prompt: it is read


def test_without_a_date_the_clock_templates_warn_and_show_today(model_dir, monkeypatch, capsys):
    clock = FrozenClock(monkeypatch)
    clock.set("2030-03-04")
    chat = renderer(model_dir, {"reasoning_effort": "low"})
    assert "Current date: 2030-03-04\n" in chat.render(mt_bench_messages(1))
    assert "renders today's date into every prompt" in capsys.readouterr().err
    first = chat.prompt_hash(mt_bench_messages(1))
    clock.set("2030-03-05")
    assert renderer(model_dir, {"reasoning_effort": "low"}).prompt_hash(mt_bench_messages(1)) != first


def test_a_date_the_template_never_shows_is_refused(llm_jp_dir, tmp_path):
    folder = with_template(llm_jp_dir, tmp_path / "no-date",
                           "{% for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}"
                           "<|start|>assistant")
    with pytest.raises(UserError, match=r"model\.chat_template_kwargs\.conversation_start_date: the chat template renders"):
        renderer(folder, {"conversation_start_date": DATE})


def test_a_clock_format_the_harness_cannot_fix_fails_clearly(llm_jp_dir, tmp_path):
    folder = with_template(llm_jp_dir, tmp_path / "odd-clock",
                           "{% set f = '%d.%m.%Y' %}<|start|>system<|message|>Today: {{ strftime_now(f) }}<|end|>"
                           "{% for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}"
                           "<|start|>assistant")
    with pytest.raises(UserError, match=r"asks the clock for %d\.%m\.%Y, which the harness cannot fix"):
        renderer(folder, {"conversation_start_date": DATE})


def test_the_generation_key_follows_the_rendered_prompt(model_dir, monkeypatch):
    from eval.resume import ResumeRules

    clock = FrozenClock(monkeypatch)
    request = GenerationRequest(Slot(1, "mt_bench_ja", "1", 1), mt_bench_messages(1), Sampling(0.0, None, 64), 7)

    def key(kwargs, day):
        clock.set(day)
        model = HFModel(backend="hf", path=str(model_dir), chat_template_kwargs=kwargs)
        rules = ResumeRules(SimpleNamespace(rounds=1), {}, None, HFBackend(model, GenerationConfig()))
        return rules.generation_key(request)

    assert key(KWARGS, "2030-01-01") == key(KWARGS, "2031-06-07")  # the configured date: the same prompt every day
    undated = {"reasoning_effort": "low"}
    assert key(undated, "2030-01-01") != key(undated, "2031-06-07")  # today's date in the prompt: never reused


# ---------------------------------------------------------------- parsing real token sequences

HARMONY = ReasoningFormat(format="harmony")


def harmony_ids(name: str) -> list[int]:
    return [int(x) for x in (HARMONY_DATA / name).read_text().split()]


def test_gpt_oss_completions_parse_to_their_final_answer(gpt_oss_dir):
    chat = renderer(gpt_oss_dir)
    ids = harmony_ids("test_simple_reasoning_response.txt")
    text = chat.decode(ids + [chat.special["<|return|>"]])
    parsed = parse_output(text, False, HARMONY, chat.special_tokens)
    assert (parsed.final, parsed.status) == ("2 + 2 = 4.", "ok")
    assert parsed.reasoning.startswith("User asks") and "<|" not in parsed.reasoning
    assert parse_output(chat.decode(ids), True, HARMONY, chat.special_tokens).status == "truncated"
    tool_call = parse_output(chat.decode(harmony_ids("test_simple_tool_call.txt")), False, HARMONY, chat.special_tokens)
    assert (tool_call.final, tool_call.status) == (None, "no_final")


@pytest.mark.parametrize("body,status", [
    ("Hello<|startoftext|> world<|start|>!", "ok"),
    ("   \n ", "no_final"),
    ("<|endoftext|><|startoftext|>", "no_final"),
])
def test_final_text_carries_no_special_token_and_empty_is_no_final(model_dir, body, status):
    chat = renderer(model_dir)
    head = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>"
    ids = chat.tokenizer(f"{head}{body}<|return|>", add_special_tokens=False)["input_ids"]
    parsed = parse_output(chat.decode(ids), False, HARMONY, chat.special_tokens)
    assert (parsed.reasoning, parsed.status) == ("Think.", status)
    if status == "ok":  # the stray tokens are gone, and nothing else is
        head_len = len(chat.tokenizer(head, add_special_tokens=False)["input_ids"])
        stray = {chat.special["<|start|>"], chat.tokenizer.convert_tokens_to_ids("<|startoftext|>")}
        assert stray <= set(ids[head_len:])
        clean = ids[:head_len] + [t for t in ids[head_len:] if t not in stray]
        assert parsed.final == parse_output(chat.decode(clean), False, HARMONY, chat.special_tokens).final
        assert "<|" not in parsed.final and "Hello" in parsed.final and "world" in parsed.final
    else:  # the empty text is kept as written; the status keeps it from the judge as an answer
        assert not (parsed.final or "").strip()


# ---------------------------------------------------------------- stops on every engine, scripted tokens

LIMIT = 64
ANALYSIS = "<|channel|>analysis<|message|>Short thought.<|end|><|start|>assistant"
RAMBLE = "<|start|>assistant<|channel|>analysis<|message|>" + " and more" * 40


def script_ids(chat: ChatRenderer, final_end: str) -> tuple[list[int], int]:
    """Tokens a model writes: analysis, a final message closed by `final_end`, then rambling to the limit.
    Returns the tokens and the length of the answer up to and including its stop token."""
    answer = chat.tokenizer(f"{ANALYSIS}<|channel|>final<|message|>The answer.{final_end}",
                            add_special_tokens=False)["input_ids"]
    ramble = chat.tokenizer(RAMBLE, add_special_tokens=False)["input_ids"]
    return answer + ramble, len(answer)


class Scripted:
    """Overrides the model's logits so that every request writes `scripts[prompt length]` (generate: one step per
    call for the whole batch; continuous batching: each packed token knows its position); counts forward calls."""

    def __init__(self, model, scripts: dict[int, list[int]], pad_id: int):
        self.scripts = scripts
        self.pad_id = pad_id
        self.calls = 0
        self.forward = model.forward
        self.rows: list[int] = []
        self.step = 0
        model.forward = self

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        self.calls += 1
        logits = out.logits
        positions = kwargs.get("position_ids")
        if positions is not None:  # continuous batching: one script (all prompts have the same length)
            (prompt_len, script), = self.scripts.items()
            index = (positions[0, -logits.shape[1]:] - prompt_len + 1).clamp(0, len(script) - 1)
            wanted = torch.tensor(script)[index][None, :]
        else:
            if kwargs["input_ids"].shape[1] > 1:  # prefill: a new batch (left padding)
                self.rows = [self._script_at(n) for n in (kwargs["input_ids"] != self.pad_id).sum(-1).tolist()]
                self.step = 0
            wanted = torch.tensor([script[min(done + self.step, len(script) - 1)] for script, done in self.rows])[:, None]
            wanted = wanted.expand(-1, logits.shape[1])
            self.step += 1
        logits.fill_(-1e4).scatter_(-1, wanted[..., None].to(logits.device), 0.0)
        return out

    def _script_at(self, context: int) -> tuple[list[int], int]:
        """The script of a row whose context is `context` tokens long, and how much of it the context holds already
        (a static-engine row that runs on in a later round)."""
        prompt = max(p for p in self.scripts if p <= context)
        return self.scripts[prompt], context - prompt


def hf_backend(model_dir: Path, engine: str) -> HFBackend:
    model = HFModel(backend="hf", path=str(model_dir), dtype="float32", device="cpu", engine=engine, chat_template_kwargs=KWARGS)
    b = HFBackend(model, GenerationConfig(max_new_tokens=LIMIT, batch_size=4))
    b._load()  # paged on a CPU: a cache sized from the workload (a few kilobytes here), never a share of host memory
    return b


def run(b, messages: list[list[dict[str, str]]]) -> list:
    requests = [GenerationRequest(Slot(1, "t", str(i), 1), m, Sampling(0.0, None, LIMIT), i) for i, m in enumerate(messages)]
    results = []
    b.generate(requests, results.append)
    return sorted(results, key=lambda r: r.request.slot.item_id)


def check_stops_at_the_answer(model_dir: Path, engine: str, final_end: str) -> None:
    b = hf_backend(model_dir, engine)
    script, answer_len = script_ids(b.chat, final_end)
    messages = [[{"role": "user", "content": "Question?"}]] * 2
    prompt_len = len(b.chat.encode(messages[0])[0])
    scripted = Scripted(b.model, {prompt_len: script}, b.tokenizer.pad_token_id)
    for result in run(b, messages):
        assert result.tokens_out == answer_len and result.raw.endswith(f"The answer.{final_end}")
        assert (result.parsed.final.strip(), result.parsed.status, result.finish_reason) == ("The answer.", "ok", "stop")
        assert result.tokens_in == prompt_len
    assert scripted.calls <= answer_len + 3  # generation really stopped there: it did not run on to the limit


@pytest.mark.parametrize("engine", ["static", "dynamic", "paged"])
def test_every_engine_stops_at_the_end_of_the_final_message(model_dir, engine):
    check_stops_at_the_answer(model_dir, engine, "<|end|>")


@pytest.mark.parametrize("engine", ["static", "dynamic", "paged"])
def test_every_engine_stops_at_the_end_of_the_output(llm_jp_dir, engine):
    check_stops_at_the_answer(llm_jp_dir, engine, "<|return|>")


def test_static_rounds_stop_at_the_end_of_the_final_message_wherever_a_round_ends(model_dir):
    b = hf_backend(model_dir, "static")
    script, answer_len = script_ids(b.chat, "<|end|>")
    header = b.chat.tokenizer("<|channel|>final<|message|>", add_special_tokens=False)["input_ids"]
    opened = next(i for i in range(len(script)) if script[i:i + len(header)] == header)
    messages = [[{"role": "user", "content": "Question?"}]] * 2
    scripted = Scripted(b.model, {len(b.chat.encode(messages[0])[0]): script}, b.tokenizer.pad_token_id)
    # First rounds ending before, inside and right after the final header, and on the stop token itself.
    for segment in (opened, opened + 1, opened + len(header), answer_len):
        b.first_segment = segment
        scripted.calls = 0
        results = run(b, messages)
        assert scripted.calls <= answer_len + 3, segment  # the stop held in the round after the header
        for result in results:
            assert (result.tokens_out, result.finish_reason, result.parsed.status) == (answer_len, "stop", "ok"), segment
            assert result.raw.endswith("The answer.<|end|>")


@pytest.mark.parametrize("engine", ["static", "dynamic"])
def test_a_row_that_stops_early_counts_no_padding(model_dir, engine):
    b = hf_backend(model_dir, engine)
    short, short_len = script_ids(b.chat, "<|end|>")
    long_answer = b.chat.tokenizer(f"{ANALYSIS}{ANALYSIS}<|channel|>final<|message|>Later.<|return|>",
                                   add_special_tokens=False)["input_ids"]
    messages = [[{"role": "user", "content": "Q?"}], [{"role": "user", "content": "A much longer question, this one?"}]]
    lengths = [len(b.chat.encode(m)[0]) for m in messages]
    Scripted(b.model, {lengths[0]: short, lengths[1]: long_answer + short}, b.tokenizer.pad_token_id)
    first, second = run(b, messages)
    assert (first.tokens_out, second.tokens_out) == (short_len, len(long_answer))
    assert first.raw.endswith("The answer.<|end|>") and second.raw.endswith("Later.<|return|>")
    assert b.tokenizer.pad_token not in first.raw


def test_a_model_that_never_closes_its_final_message_is_truncated_at_the_limit(llm_jp_dir):
    b = hf_backend(llm_jp_dir, "static")
    endless = b.chat.tokenizer(f"{ANALYSIS}<|channel|>final<|message|>" + " word" * 80, add_special_tokens=False)["input_ids"]
    messages = [[{"role": "user", "content": "Question?"}]]
    Scripted(b.model, {len(b.chat.encode(messages[0])[0]): endless}, b.tokenizer.pad_token_id)
    result, = run(b, messages)
    assert (result.tokens_out, result.finish_reason, result.parsed.status) == (LIMIT, "length", "truncated")


def scripted_engine(script: list[int], prompt_len: int) -> FakeVLLMEngine:
    """vLLM's engine over a script: a request stops at the first stop token id (kept) or at max_tokens."""

    def complete(ids: list[int], params) -> tuple[list[int], str]:
        rest = script[len(ids) - prompt_len:][: params.max_tokens]
        end = next((i + 1 for i, t in enumerate(rest) if t in params.stop_token_ids), len(rest))
        return rest[:end], "stop" if rest[end - 1] in params.stop_token_ids else "length"

    return FakeVLLMEngine(complete)


def test_vllm_sends_the_unfinished_requests_on_until_the_final_message_ends(model_dir, monkeypatch):
    install_fake_vllm(monkeypatch)
    from eval.backends.vllm import VLLMBackend

    b = VLLMBackend(VLLMModel(backend="vllm", path=str(model_dir), chat_template_kwargs=KWARGS),
                    GenerationConfig(max_new_tokens=LIMIT))
    script, answer_len = script_ids(b.chat, "<|end|>")
    messages = [{"role": "user", "content": "Question?"}]
    prompt = b.chat.encode(messages)[0]
    b.llm = SimpleNamespace(llm_engine=scripted_engine(script, len(prompt)))
    result, = run(b, [messages])
    assert (result.tokens_out, result.parsed.final.strip(), result.parsed.status) == (answer_len, "The answer.", "ok")
    assert result.raw.endswith("The answer.<|end|>")
    (first, first_params), (second, second_params) = b.llm.llm_engine.added
    first_budget, second_budget = first_params.max_tokens, second_params.max_tokens
    analysis_len = len(second) - len(prompt)
    assert first == prompt and second[len(prompt):] == script[:analysis_len]
    assert (first_budget, second_budget) == (LIMIT, LIMIT - analysis_len)
