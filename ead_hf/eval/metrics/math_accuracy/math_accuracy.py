"""MATH accuracy as an `evaluate` metric: the last \\boxed{...} of each completion against the gold answer,
compared with math-verify. Load it by local path (no Hub access):

    import evaluate, ead_hf.eval
    metric = evaluate.load(ead_hf.eval.MATH_ACCURACY_METRIC)
    metric.compute(predictions=["... \\\\boxed{6}"], references=["6"])
    # {'accuracy': 1.0, 'correct': [True], 'extracted': ['6']}
"""

import datasets
import evaluate

from ead_hf.eval.answers import SCORERS, last_boxed

_DESCRIPTION = "Accuracy of MATH completions: last \\boxed{} answer, math-verify equivalence with the gold answer."
_KWARGS = """
Args:
    predictions: list of completions (str); the last \\boxed{...} in each is its answer.
    references: list of gold final answers (str, the content of the gold \\boxed{}).
    scorer: how the boxed answer is compared with the gold one: boxed (math-verify, the default), numeric, exact,
        choice (see ead_hf.eval.answers.SCORERS).
Returns:
    accuracy: fraction correct; correct: per-item booleans; extracted: per-item extracted answers (or None).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MathAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, scorer="boxed"):
        extracted = [last_boxed(text) for text in predictions]
        correct = [SCORERS[scorer](gold, answer) for gold, answer in zip(references, extracted)]
        return {"accuracy": sum(correct) / len(correct) if correct else 0.0, "correct": correct,
                "extracted": extracted}
