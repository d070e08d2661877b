"""Model-pair recipes: a pair, the EAD settings to use with it, and the evidence behind them (JSON files)."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import EADConfig

__all__ = ["Recipe", "load_recipe", "shipped_recipes", "RECIPE_FORMAT"]

RECIPE_FORMAT = "ead-hf-recipe/1"
_SHIPPED = Path(__file__).parent / "shipped_recipes"


@dataclass
class Recipe:
    pair: str
    models: dict[str, Any]  # where each model comes from
    config: dict[str, Any]  # EADConfig.to_dict()
    dtype: str
    target_share: float | None
    calibration: dict[str, Any]  # data, problems, seed, max_new_tokens, measured share/accuracy, probes
    test: dict[str, Any] | None = None  # MATH-500 at config's threshold: N, accuracy, share, paired comparisons
    format: str = RECIPE_FORMAT
    notes: list[str] = field(default_factory=list)
    # per benchmark ("math", "gsm8k"): {"threshold": bits, "calibration": evidence, "test": result}
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ead_config(self) -> EADConfig:
        return EADConfig.from_dict(self.config)

    def config_for(self, benchmark: str | None = None) -> EADConfig:
        """The settings to use on `benchmark`: its own calibrated threshold where the recipe has one."""
        entry = self.benchmarks.get(benchmark) if benchmark else None
        if entry is None:
            return self.ead_config
        return EADConfig.from_dict({**self.config, "threshold": entry["threshold"]})

    def results(self) -> dict[str, dict[str, Any] | None]:
        """Per benchmark, the test-set result at the recipe's threshold there (None: not evaluated)."""
        return {"math": self.test, **{name: entry["test"] for name, entry in self.benchmarks.items() if "test" in entry}}

    def set_result(self, benchmark: str, result: dict[str, Any]) -> None:
        """Record the test-set result at the recipe's threshold on `benchmark` (`results()` reads it back)."""
        if benchmark == "math":
            self.test = result
        elif benchmark in self.benchmarks:
            self.benchmarks[benchmark]["test"] = result
        else:
            raise ValueError(f"the recipe has no {benchmark} threshold (it has: math, {', '.join(self.benchmarks)}); "
                             f"calibrate it on {benchmark} first")

    @property
    def runs_in(self) -> str:
        """The entry points that run the recipe's rule (rollback leaves rows at different lengths)."""
        one_row = " (one prompt per call)" if self.ead_config.takes_back else ""
        return f"generate(), pipelines{one_row}, continuous batching"

    def describe(self) -> list[str]:
        """What the recipe sets, where it runs and what it measured, one line each, for `ead-hf recipes`."""
        config = self.ead_config
        rule = {"decide_first": "decide-first (window 1, dwell 1)",
                "speculative": f"speculative verification (draft blocks of up to {config.draft_tokens})"}.get(
            config.variant, f"the paper's rule (window {config.window}, dwell {config.min_dwell})")
        knobs = "" if config.rollback is None else f", rollback {config.rollback:g}"
        lines = [f"{rule}{knobs}; {self.dtype}; runs in {self.runs_in}"]
        for benchmark, test in self.results().items():
            head = f"{benchmark}: {self.config_for(benchmark).threshold:g} bits"
            if not test:
                lines.append(f"{head}; no test result")
                continue
            paired = "".join(f"; vs {other} {100 * c['difference']:+.1f} [{100 * c['ci_low']:+.1f}, "
                             f"{100 * c['ci_high']:+.1f}]" + (f" (N = {c['n']})" if c["n"] != test["n"] else "")
                             for other, c in test.get("paired", {}).items())  # N where fewer problems paired
            lines.append(f"{head}; {test['data']}, N = {test['n']}: {100 * test['accuracy']:.1f}% at a "
                         f"{test['large_share']:.3f} large share, retention {test['retention_vs_large']:.2f}{paired}")
        return lines

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path


BENCHMARK_NAMES = ("math", "gsm8k")  # the benchmarks a recipe may carry thresholds for (ead_hf.eval.data.BENCHMARKS)


def get_benchmark_name(name: str) -> str:
    if name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {name!r} in benchmarks; use one of {', '.join(BENCHMARK_NAMES)}")
    return name


def shipped_recipes() -> dict[str, Path]:
    return {path.stem: path for path in sorted(_SHIPPED.glob("*.json"))}


def load_recipe(path_or_name: str | Path) -> Recipe:
    """A recipe file, or the name of one shipped in the package (see `shipped_recipes()`)."""
    path = Path(path_or_name)
    if not path.is_file():
        shipped = shipped_recipes()
        if str(path_or_name) not in shipped:
            raise ValueError(f"recipe {path_or_name!r} is neither a file nor a shipped recipe "
                             f"({', '.join(shipped) or 'none shipped'})")
        path = shipped[str(path_or_name)]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON recipe ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a JSON object with {RECIPE_FORMAT!r} as its format, got a "
                         f"{type(data).__name__}")
    if data.get("format") != RECIPE_FORMAT:
        raise ValueError(f"{path}: not an ead-hf recipe (format {data.get('format')!r}, expected {RECIPE_FORMAT!r}; "
                         "a newer format needs a newer ead-hf)")
    known = set(Recipe.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown recipe keys {unknown}; known keys are {sorted(known)}")
    required = [name for name, spec in Recipe.__dataclass_fields__.items()
                if spec.default is spec.default_factory is MISSING and name not in data]
    if required:
        raise ValueError(f"{path}: the recipe lacks {required}")
    recipe = Recipe(**data)
    try:
        recipe.config = recipe.ead_config.to_dict()  # validated now, with EADConfig's precise errors
        for benchmark, entry in recipe.benchmarks.items():
            get_benchmark_name(benchmark)
            if not isinstance(entry, dict) or "threshold" not in entry:
                raise ValueError(f"benchmarks[{benchmark!r}] needs a threshold")
            recipe.config_for(benchmark)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    return recipe
