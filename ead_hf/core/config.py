"""`EADConfig`: the routing rule of an Entropy Adaptive Decoding run. Pure Python: nothing here imports
transformers or another ead_hf module, so a config can be built, validated and stored anywhere."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = ["EADConfig", "PAPER_ROUTING", "VARIANTS", "config_from_options", "resolve_ead_config"]

_STARTS = ("small", "large")
DEFAULT_DRAFT_TOKENS = 16  # variant="speculative": the longest draft block (replayed GSM8K schedules: K = 16 took
# about 0.10 large forwards per token with exact matching, 0.07 with the rollback test at every position)
VARIANTS = ("paper", "decide_first", "speculative")
DRAFT_SCHEDULES = ("constant", "heuristic")  # transformers' names (`num_assistant_tokens_schedule`)


@dataclass(frozen=True)
class EADConfig:
    """Routing rule of Entropy Adaptive Decoding.

    Each generated token has an entropy H (bits, over the shared vocabulary, from raw logits). The mean
    of the last ``window`` entropies of a row is compared with ``threshold``: once the active model has
    written ``min_dwell`` consecutive tokens, the row moves to the large model when the mean is
    ``>= threshold`` and to the small model when it is below. The first new token is written by ``start``.

    ``threshold=float("inf")`` with ``start="small"`` is the small model alone; ``float("-inf")`` with
    ``start="large"`` is the large model alone. ``min_dwell`` 0 and 1 behave the same (a switch may happen
    after every token).

    ``policy="random"`` is the control experiment, not EAD: once the dwell allows, each token goes to the
    large model with probability ``large_probability`` (entropy is ignored; ``threshold`` is unused), drawn
    from a generator seeded with ``seed`` so that sampling draws are not disturbed.

    In a `generate()` batch, each step runs every model some live row needs on the whole batch (rows never wait;
    letting rows wait or running models on row subsets measured slower there, see docs/performance.md); the
    evaluation's continuous batching (`ead_hf.core.continuous`) runs each model on the rows that chose it.

    The rules have names (`EADConfig.paper`, `.decide_first`, `.speculative`, `.small_only`, `.large_only`):
    use those instead of spelling out knob combinations.

    ``variant="decide_first"`` (not in the paper; BiLD's fallback rule) decides before committing: the small
    model proposes every position, and where the entropy of its distribution there is ``>= threshold`` the
    large model catches up and writes that same position instead (so the uncertain token itself goes to the
    large model, not the ten after it). Needs ``window=1``, ``min_dwell=1``, ``start="small"``.

    ``rollback`` (rho in (0, 1], not in the paper; BiLD's rollback): when the large model reads tokens the small
    model wrote since its last read, it checks each: the first whose probability under the large model is
    below ``rollback`` times the large model's top probability there is dropped with every token after it, and
    the large model writes that position instead. The router's clock counts steps, not kept tokens (a dropped
    token's entropy stays in its window). Rows taken back by different amounts end at different lengths, so
    `generate()` (and pipelines) run it one prompt per call, and batches run under continuous batching
    (`ead_hf.core.continuous.continuous_ead`, ``ead-hf eval --continuous``; greedy); None never checks.

    ``variant="speculative"`` (verify, don't write): the small model drafts up to ``draft_tokens`` tokens and the
    large model reads the block in one forward and judges it. A draft whose small-model entropy was ``>=
    threshold`` ends the block and must be the large model's own greedy choice; every other draft is kept when it
    passes the rollback test (``rollback`` = rho; None: it too must be the large model's choice). The large model
    writes the first position it does not accept, or the position after a fully accepted block. A block that
    would end the answer (end-of-sequence, budget, any stopping criterion) gives its last position to the large
    model, so nothing unjudged is ever returned. ``threshold=inf, rollback=None`` is exact greedy speculative
    decoding (large-only's tokens); ``rollback`` < 1 is lossy speculative decoding (fewer large forwards).
    ``draft_schedule="heuristic"`` adapts each row's block as transformers' assisted generation does: it starts
    at ``draft_tokens`` and grows by 2 after a block whose every draft was kept, else shrinks by 1 (to >= 1);
    "constant" (the default) keeps ``draft_tokens``. Needs ``window=1``, ``min_dwell=1``, ``start="small"``; one prompt per `generate()` call, batches under
    continuous batching, as rollback.
    """

    threshold: float
    window: int = 5
    min_dwell: int = 10
    start: Literal["small", "large"] = "small"
    policy: Literal["entropy", "random"] = "entropy"
    large_probability: float | None = None
    seed: int = 0
    variant: Literal["paper", "decide_first"] = "paper"
    rollback: float | None = None
    draft_tokens: int | None = None
    draft_schedule: Literal["constant", "heuristic"] | None = None

    def __post_init__(self) -> None:
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(
                f"EADConfig.threshold must be a number of bits (float, inf allowed), got {type(threshold).__name__}"
            )
        if math.isnan(threshold):
            raise ValueError("EADConfig.threshold is NaN; use a number of bits, or float('inf')/-inf for one model")
        object.__setattr__(self, "threshold", float(threshold))
        for name, low in (("window", 1), ("min_dwell", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"EADConfig.{name} must be an int, got {type(value).__name__}")
            if value < low:
                raise ValueError(f"EADConfig.{name} must be >= {low}, got {value}")
        if self.start not in _STARTS:
            raise ValueError(f"EADConfig.start must be 'small' or 'large', got {self.start!r}")
        if self.policy not in ("entropy", "random"):
            raise ValueError(f"EADConfig.policy must be 'entropy' or 'random', got {self.policy!r}")
        if self.policy == "random":
            p = self.large_probability
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ValueError(f"EADConfig.large_probability must be a number in [0, 1] with policy='random', got {p!r}")
            object.__setattr__(self, "large_probability", float(p))
        elif self.large_probability is not None:
            raise ValueError("EADConfig.large_probability is only used with policy='random'; remove it or set policy")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"EADConfig.seed must be an int, got {type(self.seed).__name__}")
        rho = self.rollback
        if rho is not None:
            if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 < rho <= 1.0:
                raise ValueError(f"EADConfig.rollback must be a number in (0, 1] (a probability ratio to the large "
                                 f"model's top token) or None, got {rho!r}")
            if self.policy != "entropy":
                raise ValueError("EADConfig.rollback checks the entropy rule's small-model tokens; remove it for "
                                 "policy='random'")
            object.__setattr__(self, "rollback", float(rho))
        if self.variant not in VARIANTS:
            raise ValueError(f"EADConfig.variant must be one of {', '.join(map(repr, VARIANTS))}, got {self.variant!r}")
        if self.variant == "speculative":
            if self.draft_tokens is None:
                object.__setattr__(self, "draft_tokens", DEFAULT_DRAFT_TOKENS)
            k = self.draft_tokens
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"EADConfig.draft_tokens must be an int >= 1 (the longest draft block), got {k!r}")
            if self.draft_schedule is None:
                object.__setattr__(self, "draft_schedule", "constant")
            if self.draft_schedule not in DRAFT_SCHEDULES:
                raise ValueError(f"EADConfig.draft_schedule must be 'constant' or 'heuristic' (transformers' "
                                 f"num_assistant_tokens_schedule), got {self.draft_schedule!r}")
        else:
            for name in ("draft_tokens", "draft_schedule"):
                if getattr(self, name) is not None:
                    raise ValueError(f"EADConfig.{name} is a draft setting of variant='speculative'; remove it or "
                                     "use EADConfig.speculative(...)")
        if self.variant in ("decide_first", "speculative"):
            wrong = [f"{name}={getattr(self, name)!r} (use {fix})" for name, ok, fix in (
                ("window", self.window == 1, "window=1"), ("min_dwell", self.min_dwell <= 1, "min_dwell=1"),
                ("start", self.start == "small", "start='small'"), ("policy", self.policy == "entropy",
                 "policy='entropy'; the token-level random control is policy='random' with min_dwell=1")) if not ok]
            if wrong:
                raise ValueError(f"EADConfig.variant={self.variant!r} decides each position on the small model's own "
                                 f"entropy there; it does not take {', '.join(wrong)}")

    @property
    def starts_large(self) -> bool:
        return self.start == "large"

    @property
    def takes_back(self) -> bool:
        """The large model judges the small model's tokens and may drop some: rows end at different lengths."""
        return self.rollback is not None or self.variant == "speculative"

    @classmethod
    def paper(cls, threshold: float, *, window: int = 5, min_dwell: int = 10, rollback: float | None = None,
              start: Literal["small", "large"] = "small") -> "EADConfig":
        """The paper's rule: the mean entropy of the last `window` tokens picks the model of the next ones."""
        return cls(threshold=threshold, window=window, min_dwell=min_dwell, start=start, rollback=rollback)

    @classmethod
    def decide_first(cls, threshold: float, *, rollback: float | None = None) -> "EADConfig":
        """The small model proposes each position; where its entropy there is >= threshold the large writes it."""
        return cls(threshold=threshold, window=1, min_dwell=1, variant="decide_first", rollback=rollback)

    @classmethod
    def speculative(cls, threshold: float = float("inf"), *, rollback: float | None = None,
                    draft_tokens: int | None = None,
                    draft_schedule: Literal["constant", "heuristic"] | None = None) -> "EADConfig":
        """Verify, don't write: small-model drafts judged by the large model a block at a time (see the class
        docstring). The defaults are exact greedy speculative decoding."""
        return cls(threshold=threshold, window=1, min_dwell=1, variant="speculative", rollback=rollback,
                   draft_tokens=draft_tokens, draft_schedule=draft_schedule)

    @classmethod
    def random(cls, large_probability: float, *, min_dwell: int = 10, seed: int = 0) -> "EADConfig":
        """The control: each token (once the dwell allows) goes to the large model with this probability."""
        return cls(threshold=0.0, min_dwell=min_dwell, policy="random", large_probability=large_probability,
                   seed=seed)

    @classmethod
    def small_only(cls) -> "EADConfig":
        return cls(threshold=float("inf"))

    @classmethod
    def large_only(cls) -> "EADConfig":
        return cls(threshold=float("-inf"), start="large")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: infinite thresholds become the strings "inf" / "-inf"; `draft_tokens` appears only
        for the speculative rule and `draft_schedule` only when it is not "constant" (so that every dict written
        before a field existed is what it was)."""
        data = asdict(self)
        if data["draft_tokens"] is None:
            del data["draft_tokens"]
        if data["draft_schedule"] in (None, "constant"):
            del data["draft_schedule"]
        if math.isinf(data["threshold"]):
            data["threshold"] = "inf" if data["threshold"] > 0 else "-inf"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EADConfig":
        """Inverse of `to_dict`; unknown keys are an error so that typos do not pass silently."""
        if not isinstance(data, dict):
            raise TypeError(f"EADConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"EADConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("threshold"), str):
            try:
                data["threshold"] = float(data["threshold"])
            except ValueError:
                raise ValueError(
                    f"EADConfig.threshold: cannot read {data['threshold']!r} as a number (use e.g. 2.5, 'inf', '-inf')"
                ) from None
        return cls(**data)


# The paper's routing knobs, i.e. EADConfig's defaults; evaluation keys name only the knobs that differ from them.
PAPER_ROUTING = {name: EADConfig.__dataclass_fields__[name].default for name in ("window", "min_dwell")}


def resolve_ead_config(ead_config: Any) -> EADConfig:
    """An `EADConfig` from what a caller passed as `ead_config` (a config or its dict form)."""
    if isinstance(ead_config, EADConfig):
        return ead_config
    if isinstance(ead_config, dict):
        return EADConfig.from_dict(ead_config)
    if ead_config is None:
        raise ValueError("ead_config is required: pass ead_config=EADConfig(threshold=...) to generate()")
    raise TypeError(f"ead_config must be an EADConfig or a dict, got {type(ead_config).__name__}")


def config_from_options(*, default_threshold: float, recipe: EADConfig | None = None, variant: str | None = None,
                        threshold: float | None = None, window: int | None = None, min_dwell: int | None = None,
                        start: str | None = None, rollback: float | None = None,
                        draft_tokens: int | None = None,
                        draft_schedule: str | None = None) -> tuple[EADConfig, dict[str, str]]:
    """The one place where command options and a recipe become an `EADConfig`: an option given (not None) wins
    over the recipe, the recipe over the defaults. Returns the config and, for each setting that is not a
    default, where it came from ("option" or "recipe"), so a command can say so.

    The rule (`variant`) decides which knobs exist: decide-first and speculative fix window 1, dwell 1, start
    small (an option that contradicts them is an error from `EADConfig`); a recipe's window and dwell apply
    only when it has the same rule. Speculative's default threshold is inf (exact verification)."""
    sources: dict[str, str] = {}

    def pick(name: str, given, from_recipe, default):
        if given is not None:
            sources[name] = "option"
            return given
        if recipe is not None and from_recipe is not None:
            sources[name] = "recipe"
            return from_recipe
        return default

    rule = pick("variant", variant, recipe.variant if recipe else None, "paper")
    same_rule = recipe is not None and recipe.variant == rule
    knobs: dict[str, Any] = {}
    if rule == "paper":
        knobs = dict(window=pick("window", window, recipe.window if same_rule else None, PAPER_ROUTING["window"]),
                     min_dwell=pick("min_dwell", min_dwell, recipe.min_dwell if same_rule else None,
                                    PAPER_ROUTING["min_dwell"]),
                     start=pick("start", start, recipe.start if same_rule else None, "small"))
    else:
        given = {name: value for name, value in (("window", window), ("min_dwell", min_dwell), ("start", start))
                 if value is not None}
        knobs = dict(window=1, min_dwell=1, start="small") | given
    if rule == "speculative":
        knobs["draft_tokens"] = pick("draft_tokens", draft_tokens, recipe.draft_tokens if same_rule else None, None)
        knobs["draft_schedule"] = pick("draft_schedule", draft_schedule,
                                       recipe.draft_schedule if same_rule else None, None)
    elif draft_tokens is not None or draft_schedule is not None:
        raise ValueError("--draft-tokens and --draft-schedule set the draft block of the speculative rule; add "
                         "--speculative")
    default = float("inf") if rule == "speculative" else default_threshold
    config = EADConfig(threshold=pick("threshold", threshold, recipe.threshold if recipe else None, default),
                       variant=rule, rollback=pick("rollback", rollback, recipe.rollback if recipe else None, None),
                       **knobs)
    return config, sources
