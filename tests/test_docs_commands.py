"""Every `ead-hf` command the docs show names a subcommand that exists and only flags that subcommand takes
(a mention like `ead-hf bench --peers` counts too; required arguments are not asked of mentions). Nothing runs.
Synopses with `[...]`, `|` or `...` are left out."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from ead_hf.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(text: str) -> list[str]:
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):  # code blocks: lines, with continuations
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("ead-hf "):
                found.append(line)
    found += [span for span in re.findall(r"`(ead-hf [^`]+)`", text.replace("\n", " "))]
    return [c for c in found if not any(mark in c for mark in ("[", "|", "...", "…"))]


CASES = [(path.relative_to(ROOT).as_posix(), command) for path in DOCUMENTS for command in _commands(path.read_text())]


def test_the_docs_show_commands():
    assert len(CASES) > 40


def _subcommand(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The deepest subcommand parser the leading words name, and the words after them."""
    while words:
        sub = next((action for action in parser._actions if isinstance(action, argparse._SubParsersAction)), None)
        if sub is None or words[0] not in sub.choices:
            break
        parser, words = sub.choices[words[0]], words[1:]
    return parser, words


@pytest.mark.parametrize("where,command", CASES, ids=[f"{w}: {c[:60]}" for w, c in CASES])
def test_a_documented_command_uses_only_flags_its_subcommand_takes(where, command):
    parser, rest = _subcommand(build_parser(), shlex.split(command)[1:])
    assert parser.prog != "ead-hf", f"{where}: `{command}` names no subcommand"
    if parser.prog.endswith(" lm-eval"):
        return  # lm-eval's own options pass through to its command
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = [word.split("=")[0] for word in rest if word.startswith("--") and word.split("=")[0] not in known]
    assert not unknown, f"{where}: `{command}`: {parser.prog} takes no {unknown}"
