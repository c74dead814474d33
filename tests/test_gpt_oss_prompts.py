"""gpt-oss prompts as upstream's route rendered them: llm-jp-judge generated through `vllm serve`, whose chat endpoint
renders a gpt-oss conversation with openai-harmony (not the model's Jinja template). Under the default profile the
local engines' prompts equal openai-harmony's tokens, token for token, for every MT-Bench question (JA and EN), turns
1 and 2, at each effort; under `strict` (or `prompt_renderer: chat_template`) they are the template's.

The reference conversation is built here with openai-harmony itself, the way vLLM 0.34.0 builds it
(`entrypoints/openai/parser/harmony_utils.py`: `build_harmony_preamble`, `parse_chat_input_to_harmony_message`,
`render_for_completion`): harmony's default system content with the request's reasoning effort and the start date, a
leading system message's text as the developer instructions, an assistant message with text on the final channel (an
empty or null one dropped), rendered for completion without dropping analysis. openai-harmony's encoding reads
`o200k_base.tiktoken` from `TIKTOKEN_ENCODINGS_BASE` (the shared copy; nothing is downloaded).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from eval.backends.hf import HFBackend
from eval.backends.template import ChatRenderer
from eval.chat import turn_messages
from eval.compat import STRICT, UPSTREAM
from eval.config import GenerationConfig, HFModel
from eval.errors import UserError
from eval.tasks import load_spec, load_task

TOKENIZER = ROOT.parent / "shared" / "models" / "gpt-oss-tokenizer"
DATE = "2026-07-15"
EFFORTS = ("low", "medium", "high")
EARLIER_ANSWERS = ("最初の回答です。\n\n- 箇条書き", "", None)  # an empty or missing answer: dropped, as vLLM drops it


@pytest.fixture(scope="module")
def harmony(tmp_path_factory):
    """openai-harmony's gpt-oss encoding, offline (the shared o200k_base vocabulary)."""
    openai_harmony = pytest.importorskip("openai_harmony", reason="openai-harmony (a dev dependency) is not installed")
    if not (TOKENIZER / "o200k_base.tiktoken").is_file():
        pytest.skip("../shared/models is absent")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_ENCODINGS_BASE", str(TOKENIZER))
        encoding = openai_harmony.load_harmony_encoding(openai_harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
    return openai_harmony, encoding


@pytest.fixture(scope="module")
def gpt_oss_dir(tmp_path_factory) -> Path:
    """The shared gpt-oss tokenizer and template with the model's config type, as a model folder has them."""
    if not TOKENIZER.is_dir():
        pytest.skip("../shared/models is absent")
    folder = tmp_path_factory.mktemp("gpt-oss-20b")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER / name, folder / name)
    (folder / "config.json").write_text('{"model_type": "gpt_oss"}')
    return folder


def vllm_reference(harmony, messages: list[dict], effort: str) -> list[int]:
    """What vLLM's OpenAI server sends the engine for a chat request to gpt-oss (see the module docstring)."""
    oh, encoding = harmony
    system = oh.SystemContent.new().with_reasoning_effort(
        {"low": oh.ReasoningEffort.LOW, "medium": oh.ReasoningEffort.MEDIUM, "high": oh.ReasoningEffort.HIGH}[effort])
    conversation = [oh.Message.from_role_and_content(oh.Role.SYSTEM, system.with_conversation_start_date(DATE))]
    if messages[0]["role"] == "system":
        instructions, messages = messages[0]["content"], messages[1:]
        if instructions:
            developer = oh.DeveloperContent.new().with_instructions(instructions)
            conversation.append(oh.Message.from_role_and_content(oh.Role.DEVELOPER, developer))
    for message in messages:
        text = message["content"] or ""
        if message["role"] == "user":
            conversation.append(oh.Message.from_role_and_contents(oh.Role.USER, [oh.TextContent(text=text)]))
        elif text:
            conversation.append(oh.Message.from_role_and_contents(oh.Role.ASSISTANT, [oh.TextContent(text=text)])
                                .with_channel("final"))
    return encoding.render_conversation_for_completion(oh.Conversation.from_messages(conversation), oh.Role.ASSISTANT,
                                                       config=oh.RenderConversationConfig(auto_drop_analysis=False))


@pytest.fixture(scope="module")
def conversations(mirrors) -> list[list[dict]]:
    """Every MT-Bench question of both languages, turn 1 and turn 2 (after each kind of earlier answer), with the
    system prompt upstream sends."""
    out = []
    for name in ("mt_bench_ja", "mt_bench_en"):
        task = load_task(load_spec(name), "full", mirrors)
        for item in task.items:
            out.append(turn_messages(task.system_prompt, item.turns[:1], []))
            out += [turn_messages(task.system_prompt, item.turns[:2], [answer]) for answer in EARLIER_ANSWERS]
    return out


def renderer(folder: Path, effort: str, gpt_oss_renderer: str = "harmony_encoder") -> ChatRenderer:
    kwargs = {"reasoning_effort": effort, "conversation_start_date": DATE}
    return ChatRenderer(str(folder), None, False, kwargs, gpt_oss_renderer=gpt_oss_renderer)


@pytest.mark.parametrize("effort", EFFORTS)
def test_default_profile_prompts_equal_openai_harmony_token_for_token(harmony, gpt_oss_dir, conversations, effort):
    chat = renderer(gpt_oss_dir, effort)
    assert chat.renderer == "harmony_encoder" and chat.reasoning.format == "harmony"
    unequal = [m for m in conversations if chat.encode(m)[0] != vllm_reference(harmony, m, effort)]
    assert len(conversations) == 640 and not unequal, f"{len(unequal)} of {len(conversations)} differ: {unequal[:1]}"


def test_the_models_template_renders_otherwise_so_strict_prompts_are_the_templates(harmony, gpt_oss_dir, conversations):
    """The HF template ends the instructions with a blank line (and keeps an empty earlier answer), so no MT-Bench
    prompt equals vLLM's: the profiles really choose between two renderings."""
    chat = renderer(gpt_oss_dir, "medium", gpt_oss_renderer="chat_template")
    assert chat.renderer == "chat_template"
    same = [m for m in conversations if chat.encode(m)[0] == vllm_reference(harmony, m, "medium")]
    assert same == []
    text = chat.render(conversations[0])
    assert f"# Instructions\n\n{conversations[0][0]['content']}\n\n<|end|>" in text


def test_the_profile_chooses_the_renderer_and_a_config_may_override_it(gpt_oss_dir):
    kwargs = {"reasoning_effort": "low", "conversation_start_date": DATE}
    upstream = HFBackend(HFModel(backend="hf", path=str(gpt_oss_dir), chat_template_kwargs=kwargs), GenerationConfig(), UPSTREAM)
    strict = HFBackend(HFModel(backend="hf", path=str(gpt_oss_dir), chat_template_kwargs=kwargs), GenerationConfig(), STRICT)
    chosen = HFBackend(HFModel(backend="hf", path=str(gpt_oss_dir), chat_template_kwargs=kwargs,
                               prompt_renderer="chat_template"), GenerationConfig(), UPSTREAM)
    assert (upstream.chat.renderer, strict.chat.renderer, chosen.chat.renderer) == \
        ("harmony_encoder", "chat_template", "chat_template")
    messages = [{"role": "system", "content": "Answer well."}, {"role": "user", "content": "Q?"}]
    assert upstream.prompt_hash(messages) != strict.prompt_hash(messages)  # a new prompt: answers regenerate once
    assert strict.prompt_hash(messages) == chosen.prompt_hash(messages)
    assert "prompts: harmony_encoder (gpt-oss as vLLM's OpenAI server renders it" in upstream.format.describe()


def test_vllm_refuses_what_the_harmony_encoder_cannot_say(gpt_oss_dir):
    with pytest.raises(UserError, match=r"^model\.chat_template_kwargs\.reasoning_effort: 'lowish' is not a reasoning "
                                        r"effort a Harmony model knows; use one of low, medium, high$"):
        renderer(gpt_oss_dir, "lowish")
    with pytest.raises(UserError, match=r"model\.chat_template_kwargs\.model_identity: the harmony encoder renders the "
                                        r"same prompt"):
        ChatRenderer(str(gpt_oss_dir), None, False, {"reasoning_effort": "low", "conversation_start_date": DATE,
                                                     "model_identity": "You are a judge."})
