"""The docs' result tables are what the committed records say: `ead-hf eval tables evaluation/tables.json` and
`ead-hf recipes --table` print them, and README.md / docs/results.md must carry them as printed."""

from pathlib import Path

import pytest

from ead_hf.cli import main as cli_main
from ead_hf.eval.evidence import RECIPES_TITLE, recipes_table, replace_tables, tables_from_spec
from ead_hf.models.recipes import load_recipe, shipped_recipes

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "evaluation" / "tables.json"


def test_results_md_carries_the_tables_the_records_give():
    tables = tables_from_spec(SPEC)
    assert len(tables) == 2
    results = (ROOT / "docs" / "results.md").read_text()
    for title, table in tables.items():
        assert table.count("\n") >= 4  # header, rule, large, small at least
        assert table in results, (f"docs/results.md's {title!r} table differs from the records: run "
                                  "ead-hf eval tables evaluation/tables.json --write docs/results.md")


def test_readme_carries_the_shipped_recipes_table():
    table = recipes_table({name: load_recipe(name) for name in shipped_recipes()})
    assert table.count("\n") == 2 + len(shipped_recipes())  # header, rule, one row per recipe
    assert table in (ROOT / "README.md").read_text(), (
        "README.md's recipes table differs from the shipped recipes: run ead-hf recipes --table --write README.md")


def test_write_replaces_stale_tables_and_names_a_table_no_document_holds(tmp_path, capsys):
    tables = {RECIPES_TITLE: recipes_table({name: load_recipe(name) for name in shipped_recipes()}),
              **tables_from_spec(SPEC)}
    stale = "".join(f"before\n\n| {title} | stale |\n| --- |\n\nafter {i}\n" for i, title in enumerate(tables))
    text, found = replace_tables(stale, tables)
    assert "stale" not in text and text.count("before") == len(found) == len(tables) == 3
    for i, table in enumerate(tables.values()):
        assert table + f"\nafter {i}" in text
    document = tmp_path / "doc.md"
    document.write_text("| GSM8K test, 512 tokens | old |\n| --- |\n\nrest\n")
    assert cli_main(["eval", "tables", str(SPEC), "--write", str(document)]) == 2  # MATH's table is in no document
    assert "no document given holds the table(s) ['MATH-500, 1312 tokens']" in capsys.readouterr().err
    assert document.read_text().startswith("| GSM8K test, 512 tokens | N | accuracy |")
    assert document.read_text().endswith("\nrest\n")


def test_eval_evidence_writes_a_methods_result_into_a_recipe(tmp_path, capsys):
    """Re-attaching the shipped decide-first + rollback recipe's GSM8K result from the committed run gives the
    numbers it ships with; the method key comes from the recipe's rule."""
    name = "qwen2.5-coder-0.5b-1.5b-decide-first-rollback"
    shipped = load_recipe(name)
    shipped.set_result("gsm8k", None)
    path = shipped.save(tmp_path / "recipe.json")
    assert load_recipe(path).results()["gsm8k"] is None
    assert cli_main(["eval", "evidence", str(path), "--benchmark", "gsm8k", "--run",
                     str(ROOT / shipped.results()["math"]["run"]).replace("math500_1312", "gsm8k_test_512"),
                     "--also", "first@0.5"]) == 0
    assert "first@0.5,rollback=0.1, N = 512" in capsys.readouterr().out
    written, expected = load_recipe(path).results()["gsm8k"], load_recipe(name).results()["gsm8k"]
    for key in ("method", "n", "accuracy", "large_share", "large_work", "retention_vs_large", "paired"):
        assert written[key] == expected[key], key
    with pytest.raises(ValueError, match="has no gsm8k threshold"):
        load_recipe(name).__class__(**{**shipped.__dict__, "benchmarks": {}}).set_result("gsm8k", {})
