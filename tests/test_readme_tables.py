"""README's result tables are what the committed records say (evaluation/readme_tables.py prints them)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def evaluation_script(name: str = "readme_tables"):
    """A script of evaluation/ (not a package) loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "evaluation" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder", ["gsm8k_test_512", "math500_1312"])
def test_readme_carries_the_tables_the_records_give(folder):
    script = evaluation_script()
    assert (script.RESULTS / folder / "records.jsonl.gz").is_file(), f"the records of {folder} are committed"
    table = script.table(folder)
    assert table.count("\n") >= 4  # header, rule, large, small at least
    assert table in (ROOT / "docs" / "results.md").read_text(), (
        f"docs/results.md's {folder} table differs from the records: run python evaluation/readme_tables.py --write")


def test_readme_carries_the_shipped_recipes_table():
    script = evaluation_script()
    table = script.recipes_table()
    assert table.count("\n") == 2 + len(script.shipped_recipes())  # header, rule, one row per recipe
    assert table in (ROOT / "README.md").read_text(), (
        "README.md's recipes table differs from the shipped recipes: run python evaluation/readme_tables.py --write")


def test_write_replaces_stale_tables(tmp_path):
    script = evaluation_script()
    titles = list(script.tables())
    stale = "".join(f"before\n\n| {title} | stale |\n| --- |\n\nafter {i}\n" for i, title in enumerate(titles))
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    script.write_readme(readme)
    text = readme.read_text()
    assert "stale" not in text and text.count("before") == len(titles) == 3
    for i, table in enumerate(script.tables().values()):
        assert table + f"\nafter {i}" in text
