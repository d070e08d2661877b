"""lm-evaluation-harness model "ead": lm-eval's generation tasks decoded with EAD over a pair.

    pip install "ead-hf[lm-eval]"
    ead-hf lm-eval --model_args recipe=qwen2.5-coder-0.5b-1.5b-decide-first --tasks gsm8k --limit 16
    ead-hf lm-eval --model_args small=ID_OR_FOLDER,large=ID_OR_FOLDER,threshold=0.5,rule=decide_first --tasks ...

`EADLM` is lm-eval's own `HFLM` around the large model, whose generate is EAD-enabled: tokenisation, batching,
stop sequences and chat templates are lm-eval's. It counts the tokens each model wrote, per task
(`large_share(task)`, printed after a run for each task and over all). Log-likelihood tasks score a text under one model, which EAD does not change, so they are refused
rather than silently run on the large model alone.
"""

from __future__ import annotations

from collections import defaultdict

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..core.config import EADConfig
from ..hf.integration import enable_ead

__all__ = ["EADLM", "LAST_MODEL"]

LAST_MODEL = None  # the last EADLM built (lm-eval's command builds it itself): `ead-hf lm-eval` prints its share

_RULES = {"paper": EADConfig.paper, "decide_first": EADConfig.decide_first, "speculative": EADConfig.speculative}


@register_model("ead")
class EADLM(HFLM):
    def __init__(self, small=None, large=None, tokenizer=None, ead_config: EADConfig | None = None,
                 recipe: str | None = None, pair: str | None = None, threshold: float | None = None,
                 rule: str | None = None, rollback: float | None = None, dtype: str = "auto", **kwargs) -> None:
        """Models as objects (`small`, `large`, `tokenizer`, `ead_config`), or, from `--model_args`, by `recipe`, a
        named `pair`, or `small`/`large` Hub ids or folders, with `rule`, `threshold` and `rollback` overriding."""
        if isinstance(small, str) or isinstance(large, str) or recipe or pair or small is None:
            small, large, tokenizer, ead_config = _load(small, large, recipe, pair, threshold, rule, rollback, dtype)
        if ead_config is None:
            raise ValueError("EADLM needs ead_config= (an EADConfig) with model objects")
        self.ead_config = ead_config
        self.tokens_by_task: dict[str | None, dict[str, int]] = defaultdict(lambda: {"small": 0, "large": 0})
        self._task: str | None = None  # the task whose requests are being decoded
        enable_ead(small=small, large=large, tokenizer=tokenizer)
        super().__init__(pretrained=large, tokenizer=tokenizer, **kwargs)
        global LAST_MODEL
        LAST_MODEL = self

    def generate_until(self, requests, disable_tqdm: bool = False):
        """lm-eval's own generate_until, one task at a time, so that each task's tokens are counted apart."""
        answers: list = [None] * len(requests)
        by_task: dict[str | None, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            by_task[getattr(request, "task_name", None)].append(index)
        for task, indices in by_task.items():
            self._task = task
            for index, answer in zip(indices, super().generate_until([requests[i] for i in indices], disable_tqdm)):
                answers[index] = answer
        self._task = None
        return answers

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        out = super()._model_generate(context, max_length, stop, ead_config=self.ead_config,
                                      return_dict_in_generate=True, **generation_kwargs)
        choices, tokens = out.model_choices, self.tokens_by_task[self._task]
        tokens["small"] += int((choices == 0).sum())
        tokens["large"] += int((choices == 1).sum())
        return out.sequences

    @property
    def tokens(self) -> dict[str, int]:
        """Tokens each model wrote over every task."""
        return {role: sum(counts[role] for counts in self.tokens_by_task.values()) for role in ("small", "large")}

    def large_share(self, task: str | None = None) -> float:
        """The share of tokens the large model wrote, in `task` (lm-eval's task name), or over all when None."""
        tokens = self.tokens if task is None else self.tokens_by_task.get(task, {"small": 0, "large": 0})
        written = tokens["small"] + tokens["large"]
        return tokens["large"] / written if written else float("nan")

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("model 'ead' runs generation tasks only (output_type generate_until): a "
                                  "log-likelihood task scores text under one model, which EAD does not change")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        self.loglikelihood(requests)


def _load(small, large, recipe, pair, threshold, rule, rollback, dtype):
    from ..models.pairs import choose_pair, get_pair, load_pair
    from ..models.recipes import load_recipe

    loaded_recipe = load_recipe(recipe) if recipe else None
    pair = choose_pair(small=small, large=large, pair=pair, recipe=loaded_recipe,
                       spell=lambda name: f"model_args {name}=")
    if pair is None:
        raise ValueError("model 'ead' needs model_args recipe=NAME_OR_PATH, pair=NAME, or small=...,large=...")
    config = loaded_recipe.ead_config if loaded_recipe else None
    rule = rule or (config.variant if config else "decide_first")
    if rule not in _RULES:
        raise ValueError(f"model_args rule must be one of {', '.join(_RULES)}, got {rule!r}")
    threshold = float(threshold) if threshold is not None else (
        config.threshold if config else get_pair(pair).default_threshold)
    rollback = float(rollback) if rollback is not None else (config.rollback if config else None)
    if config is not None and rule == config.variant and threshold == config.threshold and rollback == config.rollback:
        ead_config = config
    else:
        ead_config = _RULES[rule](threshold, rollback=rollback)
    loaded = load_pair(pair, dtype=dtype)
    return loaded.small, loaded.large, loaded.tokenizer, ead_config
