"""lm-evaluation-harness's model "ead": a local task (YAML + JSONL, no network) decoded with EAD on the tiny pair
gives, per request, the answer EADGenerator gives for the same prompt; `ead-hf lm-eval` runs lm-eval's own command
with it and prints the large share."""

import json

import pytest

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.tasks import TaskManager  # noqa: E402

from ead_hf import EADConfig, EADGenerator  # noqa: E402
from ead_hf.cli import main as cli_main  # noqa: E402
from ead_hf.eval.lm_eval_adapter import EADLM  # noqa: E402
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer  # noqa: E402

CONFIG = EADConfig.decide_first(5.3)


def _task_yaml(name: str, data, prompt: str, max_tokens: int) -> str:
    return f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{prompt}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: {max_tokens}
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture()
def task_dir(tmp_path):
    rows = [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(4)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "tiny_qa.yaml").write_text(_task_yaml("tiny_qa", tmp_path / "qa.jsonl", "Q: {{question}}\\nA:", 6))
    (tmp_path / "tiny_qa_terse.yaml").write_text(
        _task_yaml("tiny_qa_terse", tmp_path / "qa.jsonl", "Question: {{question}} Answer:", 4))
    return tmp_path


def test_each_answer_is_eads_answer_for_that_prompt(task_dir):
    small, large = tiny_pair("qwen2", seed=3)
    tokenizer = tiny_tokenizer()
    lm = EADLM(small=small, large=large, tokenizer=tokenizer, ead_config=CONFIG, batch_size=1)
    results = lm_eval.simple_evaluate(model=lm, tasks=["tiny_qa"], task_manager=TaskManager(include_path=str(task_dir)),
                                      log_samples=True)
    samples = results["samples"]["tiny_qa"]
    assert len(samples) == 4 and "exact_match,none" in results["results"]["tiny_qa"]
    fresh_small, fresh_large = tiny_pair("qwen2", seed=3)  # the reference, on models lm-eval never touched
    written = 0
    for sample in samples:
        prompt, _ = sample["arguments"][0]  # (context, generation kwargs)
        ids = tokenizer(prompt, return_tensors="pt")
        out = EADGenerator(small=fresh_small, large=fresh_large, config=CONFIG).generate(
            **ids, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
        text = tokenizer.decode(out.sequences[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert sample["resps"][0][0] == text.split("\n")[0]
        written += len(out.sequences[0]) - ids["input_ids"].shape[1]
    assert 0 < lm.tokens["large"] < lm.tokens["large"] + lm.tokens["small"] <= written
    with pytest.raises(NotImplementedError, match="generation tasks only"):
        lm.loglikelihood([])


def test_the_command_runs_lm_evals_own_cli_with_model_ead(task_dir, capsys):
    assert cli_main(["lm-eval", "--model_args", "pair=tiny-random,rule=decide_first,threshold=5.3,dtype=float32",
                     "--tasks", "tiny_qa", "--include_path", str(task_dir), "--limit", "2", "--batch_size", "1"]) == 0
    out = capsys.readouterr().out
    assert "|tiny_qa|" in out and "ead: tiny_qa: large share" in out


def test_each_task_counts_its_own_tokens(task_dir):
    """Two tasks in one run split the token counts exactly as two runs of one task each count them."""
    manager = TaskManager(include_path=str(task_dir))

    def run(tasks):
        small, large = tiny_pair("qwen2", seed=3)
        lm = EADLM(small=small, large=large, tokenizer=tiny_tokenizer(), ead_config=CONFIG, batch_size=1)
        lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager)
        return lm

    both = run(["tiny_qa", "tiny_qa_terse"])
    assert set(both.tokens_by_task) == {"tiny_qa", "tiny_qa_terse"}
    for task in ("tiny_qa", "tiny_qa_terse"):
        alone = run([task])
        assert both.tokens_by_task[task] == alone.tokens_by_task[task] == alone.tokens
        assert both.large_share(task) == alone.large_share()
    assert both.tokens == {role: sum(counts[role] for counts in both.tokens_by_task.values()) for role in both.tokens}
    assert both.tokens_by_task["tiny_qa"] != both.tokens_by_task["tiny_qa_terse"]
