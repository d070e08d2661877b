"""Every example script, and the README's Python section, runs and shows what it demonstrates (they are what the
README points users to).
Each example asserts its own point; the line it prints after the assertion is checked here."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
SHOWS = {
    "custom_generate_callable.py": "same tokens as EADGenerator: True",
    "custom_generate_folder.py": "ends at the first stop string",
    "generator.py": "large share over the batch: 0.",
    "pipeline.py": "records with model_choices: 2",
    "quickstart.py": "legend:",
    "sampling_stream.py": "same sample from the same seed: True",
    "speculative.py": "exact: the large model's tokens;",
    "variants.py": "exactly the positions where the small model's entropy >=",
}


def test_every_example_is_checked():
    assert {p.name for p in EXAMPLES} == set(SHOWS)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script):
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert SHOWS[script.name] in result.stdout, result.stdout[-2000:]


def test_readme_python_block_runs_on_the_tiny_pair():
    """README's Python section, with its real pair swapped for the tiny random one (no weights needed)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python\n"):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("\n```", start)]
    assert 'load_pair("qwen2.5-coder-0.5b-1.5b")' in code, "the README block loads the default pair"
    code = "import ead_hf.models.tiny\n" + code.replace('load_pair("qwen2.5-coder-0.5b-1.5b")', 'load_pair("tiny-random")')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tokens taken back" in result.stdout, result.stdout[-2000:]
