"""Model-pair recipes: a pair, the EAD settings to use with it, and the evidence behind them (JSON files)."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import EADConfig

__all__ = ["Recipe", "load_recipe", "shipped_recipes", "RECIPE_FORMAT", "RECIPE_FILE"]

RECIPE_FORMAT = "ead-hf-recipe/1"
RECIPE_FILE = "ead_recipe.json"  # a recipe folder or Hub repo: this file, and a README.md model card
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
                "speculative": f"speculative verification (draft blocks of up to {config.draft_tokens}"
                               + (", adapted as transformers' heuristic" if config.draft_schedule == "heuristic" else "")
                               + ")"}.get(
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

    def card(self) -> str:
        """The README.md of a recipe folder: what the recipe sets and its evidence, for people browsing the Hub."""
        models = "".join(f"- {role}: `{json.dumps(source)}`\n" for role, source in self.models.items())
        evidence = "".join(f"- {line}\n" for line in self.describe())
        notes = "".join(f"- {note}\n" for note in self.notes)
        return (f"---\ntags:\n- ead-hf\n- entropy-adaptive-decoding\n---\n\n# EAD recipe: {self.pair}\n\n"
                f"Entropy Adaptive Decoding settings for a small + large model pair, for "
                f"[ead-hf](https://pypi.org/project/ead-hf/): `ead-hf generate --recipe REPO_OR_FOLDER \"...\"`, or "
                f"`Recipe.from_pretrained(...)` in Python.\n\n## Models\n\n{models}\n## Settings and evidence\n\n"
                f"{evidence}" + (f"\n## Notes\n\n{notes}" if notes else ""))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the recipe as a folder (`ead_recipe.json` + a README.md card), as a model folder is written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save(directory / RECIPE_FILE)
        (directory / "README.md").write_text(self.card(), encoding="utf-8")
        return directory

    @classmethod
    def from_pretrained(cls, source: str | Path, *, revision: str | None = None) -> "Recipe":
        """A recipe file, a recipe folder, a shipped recipe's name, or a Hub repo id holding `ead_recipe.json`
        (from the local HF cache when offline), as `GenerationConfig.from_pretrained` is used."""
        return load_recipe(source, revision=revision)

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    commit_message: str = "Upload EAD recipe") -> str:
        """Upload the recipe folder to a Hub repo (created if missing); returns the commit URL."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as staging:
            self.save_pretrained(staging)
            commit = api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=commit_message)
        return str(getattr(commit, "commit_url", commit))


BENCHMARK_NAMES = ("math", "gsm8k")  # the benchmarks a recipe may carry thresholds for (ead_hf.eval.data.BENCHMARKS)


def get_benchmark_name(name: str) -> str:
    if name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {name!r} in benchmarks; use one of {', '.join(BENCHMARK_NAMES)}")
    return name


def shipped_recipes() -> dict[str, Path]:
    return {path.stem: path for path in sorted(_SHIPPED.glob("*.json"))}


def _locate(source: str | Path, revision: str | None) -> Path:
    """The recipe file `source` names: a file, a folder's ead_recipe.json, a shipped name, or a Hub repo's file."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        if not (path / RECIPE_FILE).is_file():
            raise ValueError(f"recipe folder {path} has no {RECIPE_FILE} (write one with Recipe.save_pretrained)")
        return path / RECIPE_FILE
    shipped = shipped_recipes()
    if str(source) in shipped:
        return shipped[str(source)]
    if isinstance(source, str) and source.count("/") == 1 and not source.startswith((".", "/")):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

        try:
            return Path(hf_hub_download(source, RECIPE_FILE, revision=revision))
        except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError) as error:
            raise ValueError(f"recipe {source!r}: no file, folder or shipped recipe of that name, and the Hub repo's "
                             f"{RECIPE_FILE} could not be read ({type(error).__name__}; offline, it must be in the "
                             "local HF cache)") from None
    raise ValueError(f"recipe {source!r} is neither a file, a recipe folder, a shipped recipe "
                     f"({', '.join(shipped) or 'none shipped'}) nor a Hub repo id (owner/name)")


def load_recipe(path_or_name: str | Path, *, revision: str | None = None) -> Recipe:
    """A recipe file, a recipe folder, the name of one shipped in the package (see `shipped_recipes()`), or a Hub
    repo id (owner/name) holding `ead_recipe.json`."""
    path = _locate(path_or_name, revision)
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
