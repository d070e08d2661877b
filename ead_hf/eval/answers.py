"""Final answers of MATH-style solutions: the last \\boxed{...}, compared through math-verify."""

from __future__ import annotations

import re

__all__ = ["SCORERS", "answers_match", "choice_match", "exact_match", "is_compound_quantity", "last_boxed", "numbers_match"]

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) with balanced braces; None if absent or unbalanced.

    Nested braces are kept (\\boxed{\\frac{1}{2}} gives \\frac{1}{2}); `\\boxed 5` (no braces) gives 5.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    start = max(text.rfind(command) for command in _BOX_COMMANDS)
    while start != -1:
        command = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
        index = start + len(command)
        if text.startswith(" ", index) and not text.startswith("{", index):
            token = text[index + 1:].split("$")[0].split()
            if token:
                return token[0]
        if text.startswith("{", index):
            depth = 0
            for position in range(index, len(text)):
                if text[position] == "{":
                    depth += 1
                elif text[position] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[index + 1:position]
            return None  # unbalanced: the box never closes
        start = max(text.rfind(c, 0, start) for c in _BOX_COMMANDS)
    return None


def _parse(answer: str):
    from math_verify import parse

    return parse(f"$\\boxed{{{answer}}}$")


_TEXT_GROUP = re.compile(r"\\(?:text|mbox|mathrm|textbf)\s*\{[^{}]*\}")
_NUMBER = re.compile(r"\d")


def is_compound_quantity(answer: str) -> bool:
    """True when numbers stand on both sides of a words group: `10 \\text{ feet } 4 \\text{ inches}`,
    `5 \\text{ h } 30 \\text{ min}`. math-verify reads such an answer as its leading number, which would make
    "10 feet 4 inches" equal to 10; it is a second quantity, not a unit."""
    pieces = _TEXT_GROUP.split(answer)
    return len(pieces) > 1 and sum(bool(_NUMBER.search(piece)) for piece in pieces) > 1


def answers_match(gold: str, predicted: str | None) -> bool:
    """math-verify equivalence of two answers (gold first: argument order matters to verify); an answer that is
    two quantities in words (`is_compound_quantity`) matches only a gold answer of the same form."""
    if predicted is None:
        return False
    if is_compound_quantity(predicted) and not is_compound_quantity(gold):
        return False
    from math_verify import verify

    gold_parsed, predicted_parsed = _parse(gold), _parse(predicted)
    if not gold_parsed or not predicted_parsed:
        return gold.strip() == predicted.strip()
    return bool(verify(gold_parsed, predicted_parsed))


_NUMBER_TEXT = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _first_number(text: str) -> float | None:
    text = _TEXT_GROUP.sub(" ", text).replace("\\$", "").replace("$", "").replace("\\%", "").replace("\\!", "")
    found = _NUMBER_TEXT.findall(text.replace("{,}", ","))
    return float(found[0].replace(",", "")) if found else None


def numbers_match(gold: str, predicted: str | None) -> bool:
    """Scorer "numeric": the first number of each (thousands commas, $ and % dropped) equal within 1e-6, relative;
    a compound quantity (`is_compound_quantity`) is not its first number."""
    if predicted is None or is_compound_quantity(predicted):
        return False
    want, got = _first_number(str(gold)), _first_number(predicted)
    return want is not None and got is not None and abs(want - got) <= 1e-6 * max(1.0, abs(want))


def _normalise(text: str) -> str:
    text = re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}", r"\1", text)
    return " ".join(text.replace("$", "").strip().strip(".").casefold().split())


def exact_match(gold: str, predicted: str | None) -> bool:
    """Scorer "exact": the same text after dropping \\text{...} wrappers, $, a final period, case and extra spaces."""
    return predicted is not None and _normalise(predicted) == _normalise(str(gold))


def _letter(text: str) -> str | None:
    found = re.search(r"\b([A-Z])\b", _TEXT_GROUP.sub(lambda m: " " + m.group(0)[m.group(0).index("{") + 1:-1] + " ",
                                                         text).upper())
    return found.group(1) if found else None


def choice_match(gold: str, predicted: str | None) -> bool:
    """Scorer "choice": the option letter (`B`, `(B)`, `B) 12`, `\\text{B}`) equals the gold letter."""
    return predicted is not None and _letter(str(gold)) is not None and _letter(predicted) == _letter(str(gold))


#: The scorers of `ead-hf eval task --scorer`, each on the completion's last \boxed{} answer against the gold one.
SCORERS = {"boxed": answers_match, "numeric": numbers_match, "exact": exact_match, "choice": choice_match}
