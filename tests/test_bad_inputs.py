"""The bad-input catalogue: every user mistake ends with exit code 2 and one line on stderr that names the file,
key or item and says what to do — never a traceback.

The cases run in this process (`eval.cli.main`); those in IN_A_PROCESS run `python -m eval` itself, for the reason
given there."""

from __future__ import annotations

import errno
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest
import yaml
from conftest import LJJ_BASE, ROOT, UPSTREAM
from helpers import SECRET, cli, run_cli

PROGRESS = re.compile(r"^(generate|judge|batch \S+|model): ")  # progress lines of a case that fails after generating
SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def write_config(tmp: Path, **changes) -> Path:
    data = json.loads(json.dumps(SMOKE))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def run_args(tmp: Path, config: Path, *extra: str) -> list[str]:
    return ["run", str(config), "--out", str(tmp / "run"), "--rounds", "1", "--limit", "1", *extra]


def mt_questions(tmp: Path, rows: list[dict]) -> dict:
    path = tmp / "questions.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"mt_bench_ja": {"variants": {"sample": {"data": {"questions": {"path": str(path)}}}}}}


def prompt_file(tmp: Path, template: str, regex: str = r"\[\[(10|[1-9])\]\]") -> dict:
    entries = {name: {"regex": regex, "system_prompt": "s", "prompt_template": template.replace("Q", "{question}" if "multi" not in name
                      else "{question_1} {question_2} {answer_1}")}
               for name in ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn")}
    entries["single-math-v1"]["prompt_template"] += " {ref_answer_1}"
    entries["single-math-v1-multi-turn"]["prompt_template"] += " {ref_answer_1} {ref_answer_2}"
    path = tmp / "prompts.yaml"
    path.write_text(yaml.safe_dump(entries))
    return {"mt_bench_ja": {"variants": {"sample": {"judge_prompts": {"path": str(path)}}}}}


def hf_folder(tmp: Path, rows: list[dict]) -> str:
    folder = tmp / "ds"
    (folder / "v2.0").mkdir(parents=True)
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: v2.0\n  data_files:\n  - split: test\n    path: v2.0/test.jsonl\n---\n")
    (folder / "v2.0" / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(folder)


@pytest.fixture(scope="module")
def gated_hub():
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b'{"error": "Access to dataset llm-jp/AnswerCarefully is restricted."}'
            self.send_response(401)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access to dataset llm-jp/AnswerCarefully is restricted.")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def case_yaml_syntax(tmp, **_):
    path = tmp / "c.yaml"
    path.write_text("name: smoke\nmodel: {backend: hf\ntasks: [x]\n")
    return ["run", str(path)], {}, [str(path), "YAML syntax error at line"]


def case_unknown_key(tmp, **_):
    return ["run", str(write_config(tmp, judge__concurency=3))], {}, ["config.yaml", "unknown key 'judge.concurency'", "did you mean 'concurrency'"]


def case_wrong_type(tmp, **_):
    return ["run", str(write_config(tmp, rounds="three"))], {}, ["config.yaml", "'rounds'", "valid integer"]


def case_missing_config(tmp, **_):
    return ["run", str(tmp / "absent.yaml")], {}, ["absent.yaml", "not found"]


def case_config_not_a_mapping(tmp, **_):
    path = tmp / "c.yaml"
    path.write_text("- a\n- b\n")
    return ["run", str(path)], {}, [str(path), "must be a YAML mapping"]


def case_unknown_task(tmp, **_):
    return ["run", str(write_config(tmp, tasks=["mt_bench_jp"]))], {}, ["config.yaml", "unknown task 'mt_bench_jp'", "did you mean 'mt_bench_ja'"]


def case_unknown_backend(tmp, **_):
    return ["run", str(write_config(tmp, model__backend="tgi"))], {}, ["config.yaml", "'model'", "'tgi'"]


def case_rounds_below_one(tmp, **_):
    return ["run", str(write_config(tmp, rounds=0))], {}, ["config.yaml", "'rounds'", "greater than or equal to 1"]


def case_concurrency_zero(tmp, **_):
    return ["run", str(write_config(tmp, judge__concurrency=0))], {}, ["config.yaml", "'judge.concurrency'", "greater than or equal to 1"]


def case_limit_zero(tmp, **_):
    return ["run", str(write_config(tmp)), "--limit", "0"], {}, ["--limit must be at least 1"]


def case_model_path_missing(tmp, **_):
    return run_args(tmp, write_config(tmp, model__path="./no/such/model")), {}, ["model.path", "./no/such/model does not exist"]


def case_tokenizer_without_chat_template(tmp, smoke_model_dir, **_):
    model = tmp / "model"
    shutil.copytree(smoke_model_dir, model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return run_args(tmp, write_config(tmp, model__path=str(model))), {}, ["model.path", "has no chat template"]


def case_template_kwargs_not_a_mapping(tmp, **_):
    return ["run", str(write_config(tmp, model__chat_template_kwargs="medium"))], {}, ["'model.chat_template_kwargs'", "valid dictionary"]


def case_template_kwarg_typo(tmp, **_):
    kwargs = {"reasoning_efort": "low", "conversation_start_date": "2026-07-15"}
    return run_args(tmp, write_config(tmp, model__chat_template_kwargs=kwargs)), {}, \
        ["model.chat_template_kwargs.reasoning_efort", "renders the same prompt", "unchecked_template_kwargs"]


def case_conversation_date_not_a_date(tmp, **_):
    kwargs = {"reasoning_effort": "low", "conversation_start_date": "15 July"}
    return run_args(tmp, write_config(tmp, model__chat_template_kwargs=kwargs)), {}, \
        ["model.chat_template_kwargs.conversation_start_date", "'15 July' is not a YYYY-MM-DD date"]


def case_dataset_missing_field(tmp, **_):
    folder = hf_folder(tmp, [{"ID": "1", "question": "q", "output": "r"}])
    options = {"answer_carefully": {"variants": {"sample": {"data": {"dataset": folder}}}}}
    return run_args(tmp, write_config(tmp, task_options=options)), {}, ["task answer_carefully", "no field 'text'", "fields found: ID, output, question"]


def case_duplicate_item_ids(tmp, **_):
    row = {"question_id": 7, "category": "writing", "turns": ["a", "b"]}
    return run_args(tmp, write_config(tmp, task_options=mt_questions(tmp, [row, row]))), {}, ["task mt_bench_ja", "duplicate item id '7'"]


def case_empty_dataset(tmp, **_):
    return run_args(tmp, write_config(tmp, task_options=mt_questions(tmp, []))), {}, ["task mt_bench_ja", "the dataset is empty"]


def case_checksum_mismatch(tmp, **_):
    if not UPSTREAM.is_dir():
        pytest.skip("../shared/upstream is absent")
    mirror = tmp / "mirror"
    shutil.copytree(UPSTREAM / "llm-jp-judge", mirror)
    target = mirror / "data/mt_bench_ja/question/question_full-v3.jsonl"
    target.write_text(target.read_text().replace("Python", "Ruby", 1))
    config = write_config(tmp, variant="full", tasks=["mt_bench_ja"], asset_mirrors={LJJ_BASE: str(mirror) + "/"})
    return run_args(tmp, config), {}, ["mt_bench_ja/question_full-v3", "checksum mismatch", "e0b4bb06c909386a9b932e247f87a5efd8877808aa886062ef17f87c29e479a4"]


def case_offline_and_not_cached(tmp, **_):
    config = write_config(tmp, variant="full", tasks=["mt_bench_en"])
    return run_args(tmp, config), {"LLMJP_EVAL_CACHE": str(tmp / "empty-cache"), "HF_HUB_OFFLINE": "1"}, \
        ["task mt_bench_en: 4 files (questions, references", "not in the cache", "downloads are off", "python -m eval fetch"]


def case_unreachable_url(tmp, **_):
    options = {"mt_bench_ja": {"variants": {"sample": {"data": {"questions": {"url": "http://127.0.0.1:9/q.jsonl", "sha256": "0" * 64}}}}}}
    return run_args(tmp, write_config(tmp, task_options=options)), {"LLMJP_EVAL_CACHE": str(tmp / "c"), "HF_HUB_OFFLINE": "0"}, \
        ["task mt_bench_ja: file (questions) not in the cache", "http://127.0.0.1:9 does not answer", "python -m eval fetch"]


def case_gated_dataset_without_token(tmp, gated_hub, **_):
    # The task's other files given here, so that the dataset is the one thing to download.
    local = {"system_prompt": {"text": "s"}, "judge_system_prompt": {"text": "j"},
             "judge_prompts": {"path": str(ROOT / "tasks" / "samples" / "prompts" / "safety_ja.yaml")}}
    config = write_config(tmp, variant="full", tasks=["answer_carefully"],
                          task_options={"answer_carefully": {"variants": {"full": local}}})
    env = {"HF_ENDPOINT": gated_hub, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HOME": str(tmp / "hf"), "HF_TOKEN": ""}
    return run_args(tmp, config), env, ["task answer_carefully", "llm-jp/AnswerCarefully is gated", "HF_TOKEN"]


def case_judge_key_unset(tmp, mock_server, **_):
    server = mock_server()
    config = write_config(tmp, judge__mock=False, judge__base_url=server.url, judge__api_key_env="NO_SUCH_KEY_VAR")
    return run_args(tmp, config), {}, ["judge.api_key_env", "NO_SUCH_KEY_VAR is not set"]


def case_judge_unreachable(tmp, **_):
    config = write_config(tmp, judge__mock=False, judge__base_url="http://127.0.0.1:9/v1", judge__api_key_env="MOCK_JUDGE_KEY",
                          judge__max_retries=0)
    return run_args(tmp, config), {"MOCK_JUDGE_KEY": SECRET}, ["judge.base_url", "cannot reach http://127.0.0.1:9/v1"]


def case_judge_auth_error(tmp, mock_server, **_):
    server = mock_server(api_key="the-right-key")
    config = write_config(tmp, judge__mock=False, judge__base_url=server.url, judge__api_key_env="MOCK_JUDGE_KEY")
    return run_args(tmp, config), {"MOCK_JUDGE_KEY": SECRET}, ["rejected the API key in MOCK_JUDGE_KEY (401)"]


def case_prompt_missing_placeholder(tmp, **_):
    options = prompt_file(tmp, "grade Q")  # single-v1 lacks {answer}
    return run_args(tmp, write_config(tmp, task_options=options)), {}, ["prompts.yaml", "template 'single-v1' lacks the placeholder(s) {answer}"]


def case_regex_does_not_compile(tmp, **_):
    options = prompt_file(tmp, "grade Q {answer}", regex=r"\[\[(10|[1-9]\]\]")
    return run_args(tmp, write_config(tmp, task_options=options)), {}, ["prompts.yaml", ": single-", "does not compile"]


def case_output_not_writable(tmp, **_):
    blocker = tmp / "a-file"
    blocker.write_text("x")
    return ["run", str(write_config(tmp)), "--out", str(blocker / "run")], {}, [str(blocker / "run"), "cannot create the run directory", "--out"]


def case_set_unknown_key(tmp, **_):
    return ["run", str(write_config(tmp)), "--set", "judge.bogus=1"], {}, ["unknown key 'judge.bogus' (from --set)"]


def case_set_without_value(tmp, **_):
    return ["run", str(write_config(tmp)), "--set", "judge.concurrency"], {}, ["--set 'judge.concurrency'", "key=value"]


def case_api_key_pasted_into_config(tmp, **_):
    return ["run", str(write_config(tmp, judge__api_key_env=SECRET))], {}, ["'judge.api_key_env'", "must name an environment variable"]


def case_credentials_in_the_judge_address(tmp, **_):
    config = write_config(tmp, judge__mock=False, judge__base_url="https://judge-user:pa55word-XYZ@judge.example/v1")
    return run_args(tmp, config), {}, ["'judge.base_url'", "holds credentials (user:password@host)", "api_key_env"]


def case_credentials_in_the_azure_endpoint(tmp, **_):
    azure = {"endpoint": "https://u:pa55word-XYZ@r.openai.azure.com", "deployment": "d"}
    config = write_config(tmp, judge__mock=False, judge__provider="azure", judge__azure=azure)
    return run_args(tmp, config), {}, ["'judge.azure.endpoint'", "holds credentials"]


def case_credentials_in_a_generator_address(tmp, **_):
    model = {"backend": "openai", "path": "m", "base_urls": ["http://127.0.0.1:8000/v1", "http://u:pa55word-XYZ@h/v1"]}
    return run_args(tmp, write_config(tmp, model=model)), {}, ["'model.base_urls'", "holds credentials"]


def case_budget_without_price(tmp, **_):
    return ["run", str(write_config(tmp, judge__budget_usd=5))], {}, ["'judge'", "budget_usd needs a price for mock-judge"]


def case_task_options_for_another_task(tmp, **_):
    config = write_config(tmp, tasks=["mt_bench_en"], task_options={"mt_bench_ja": {"judge": {"parse_retries": 1}}})
    return run_args(tmp, config), {}, ["task_options: mt_bench_ja not among the run's tasks"]


def case_replay_file_missing(tmp, **_):
    config = write_config(tmp, model={"backend": "replay", "path": str(tmp / "answers.jsonl")})
    return run_args(tmp, config), {}, ["model.path", "answers.jsonl not found"]


def case_incompatible_run_directory(tmp, **_):
    first = cli(*run_args(tmp, write_config(tmp)))
    assert first.returncode == 0, first.stderr[-2000:]
    return run_args(tmp, write_config(tmp, judge__model="another-judge")), {}, [str(tmp / "run"), "other settings: judge.model (mock-judge → another-judge)", "re-judge up to 6 stored judgments", "--force"]


def case_run_name_escapes_the_output_folder(tmp, **_):
    return ["run", str(write_config(tmp, name=".."))], {}, ["config.yaml", "'name'", "plain folder name", "(got '..')"]


def case_yaml_nested_a_thousand_levels(tmp, **_):
    path = tmp / "c.yaml"
    path.write_text((ROOT / "configs" / "smoke.yaml").read_text() + "task_options: " + "[" * 1000 + "]" * 1000 + "\n")
    return ["run", str(path)], {}, [str(path), "YAML refused at line", "nested deeper than 64 levels"]


def case_yaml_billion_laughs(tmp, **_):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    path = tmp / "c.yaml"
    text = (ROOT / "configs" / "smoke.yaml").read_text().replace("  chat_template_kwargs:\n", "  chat_template_kwargs:\n    lol: *i\n")
    path.write_text("\n".join(lines) + "\n" + text)
    return ["run", str(path)], {}, [str(path), "YAML refused", "billion laughs"]


def case_set_value_billion_laughs(tmp, **_):
    value = "{a: &a [x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)) + "}"
    return ["run", str(write_config(tmp)), "--set", f"model.chat_template_kwargs={value}"], {}, \
        ["--set model.chat_template_kwargs", "billion laughs"]


def case_rounds_huge_even_in_a_dry_run(tmp, **_):
    return ["run", str(write_config(tmp)), "--rounds", "100000000", "--dry-run"], {}, ["--rounds must be between 1 and 100"]


def case_rounds_huge_in_the_config(tmp, **_):
    return ["run", str(write_config(tmp, rounds=100000000))], {}, ["config.yaml", "'rounds'", "less than or equal to 100"]


def case_judge_concurrency_huge(tmp, **_):
    return ["run", str(write_config(tmp, judge__concurrency=10000000))], {}, \
        ["config.yaml", "'judge.concurrency'", "less than or equal to 1024"]


def case_tasks_option_names_no_task(tmp, **_):
    return ["run", str(write_config(tmp)), "--tasks", ",,,"], {}, ["--tasks ',,,' names no task"]


def case_judge_system_prompt_on_mt_bench(tmp, **_):
    options = {"mt_bench_ja": {"variants": {"sample": {"judge_system_prompt": {"text": "You are strict."}}}}}
    return run_args(tmp, write_config(tmp, task_options=options)), {}, \
        ["mt_bench_ja.yaml (with task_options.mt_bench_ja)", "judge_system_prompt' has no effect on an MT-Bench task"]


def case_replay_line_not_an_object(tmp, **_):
    answers = tmp / "answers.jsonl"
    answers.write_text('[1, 2, 3]\n')
    config = write_config(tmp, model={"backend": "replay", "path": str(answers)})
    return run_args(tmp, config), {}, ["model.path", "answers.jsonl line 1: expected a JSON object, got list"]


def case_replay_missing_answers(tmp, **_):
    answers = tmp / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "no-such-question", "choices": [{"turns": ["a", "b"]}]}) + "\n")
    config = write_config(tmp, model={"backend": "replay", "path": str(answers)}, tasks=["mt_bench_en"])
    return run_args(tmp, config), {}, ["model.path", "answers.jsonl has no answer for 2 of 2 planned turns",
                                       "turn 1 round 1", "--tasks, --limit or --rounds"]


def case_store_with_valid_header_and_damaged_pages(tmp, **_):
    import sqlite3

    from eval.run_meta import MetaKey
    from eval.store import Store

    run = tmp / "run"
    run.mkdir()
    store = Store(run / "run.sqlite")
    for i in range(300):
        store.set_meta(MetaKey(f"filler-{i}", str), "x" * 500)
    store.close()
    db = sqlite3.connect(run / "run.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray((run / "run.sqlite").read_bytes())
    for offset in range(2 * 4096, len(data), 4096):  # keep the header page, damage every page after the first two
        data[offset:offset + 200] = b"\xff" * 200
    (run / "run.sqlite").write_bytes(bytes(data))
    return run_args(tmp, write_config(tmp)), {}, [str(run / "run.sqlite"), "the run store is damaged", "move it aside"]


def case_judge_cache_path_is_a_directory(tmp, **_):
    folder = tmp / "cache-folder"
    folder.mkdir()
    config = write_config(tmp, judge__cache="read_write", judge__cache_path=str(folder))
    return run_args(tmp, config), {}, ["judge.cache_path", "cache-folder is a directory", "judge.cache: off"]


def case_batch_mode_without_files_api(tmp, **_):
    from misbehaving_server import GOOD, MisbehavingJudge

    server = MisbehavingJudge(lambda n, body, headers: (200, GOOD))
    config = write_config(tmp, judge__mock=False, judge__base_url=server.url, judge__api_key_env="MOCK_JUDGE_KEY",
                          judge__mode="batch", tasks=["mt_bench_en"])
    return run_args(tmp, config), {"MOCK_JUDGE_KEY": SECRET}, ["judge.mode", "no Files/Batch API (HTTP 404", "judge.mode: sync"]


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}
IN_A_PROCESS = {
    "gated_dataset_without_token": "huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported",
    "yaml_syntax": "the real entry point: a config error",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_clear_line_and_exit_code_2(name, tmp_path, mock_server, gated_hub, smoke_model_dir):
    args, env, needles = CASES[name](tmp_path, mock_server=mock_server, gated_hub=gated_hub, smoke_model_dir=smoke_model_dir)
    result = (run_cli if name in IN_A_PROCESS else cli)(*args, env=env)
    assert result.returncode == 2, (name, result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("WARNING") and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert SECRET not in result.stderr + result.stdout and "pa55word" not in result.stderr + result.stdout


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 25


def test_disk_full_while_writing_reports_is_a_clear_error(tmp_path, monkeypatch):
    from eval import rundir

    out = tmp_path / "run"
    assert cli("run", "configs/smoke.yaml", "--out", str(out), "--rounds", "1", "--limit", "1").returncode == 0

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full)
    result = cli("report", str(out))
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert "disk full while writing" in err[0] and "the run store is intact" in err[0]
    assert json.loads((out / "summary.json").read_text())  # the previous summary is untouched
    assert not list(out.rglob("*.partial"))


def test_disk_full_in_the_store_is_a_clear_error(tmp_path):
    import sqlite3

    from eval.errors import UserError
    from eval.run_meta import MetaKey
    from eval.store import Store

    store = Store(tmp_path / "run.sqlite")

    class FullDisk:
        def __init__(self, db):
            self.db = db
            self.in_transaction = False

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

    store.db = FullDisk(store.db)
    with pytest.raises(UserError, match="cannot write the run store .*disk is full.* free disk space"):
        store.set_meta(MetaKey("x", int), 1)
