"""Small hand-written import files: every value below is what the tests expect back."""

from __future__ import annotations

import json
from pathlib import Path

PROBLEMS = [("What is 3 + 4?", 7), ("What is 6 * 2?", 12), ("What is 10 - 3?", 7), ("What is 9 + 9?", 18)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def generations() -> list[dict]:
    """Three responses per problem in three answer styles: right, wrong, right."""
    rows = []
    for q, a in PROBLEMS:
        for response, score in ((f"We add. The answer is {a}.", 1), (f"Hmm. The answer is {a + 1}.", 0),
                                (f"So $\\boxed{{{a}}}$", 1)):
            rows.append({"question": q, "response": response, "reference_answer": str(a),
                         "solution": f"Compute it.\n#### {a}", "score": score})
    return rows


def ultrafeedback() -> list[dict]:
    return [
        {"instruction": "Say hi", "completions": [
            {"model": "model-a", "response": "hi", "overall_score": 7.5, "fine-grained_score": 4.0},
            {"model": "model-b", "response": "hello there", "overall_score": 3.0, "fine-grained_score": 2.0}]},
        {"instruction": "Say bye", "completions": [
            {"model": "model-a", "response": "bye", "overall_score": 5.0, "fine-grained_score": 1.0},
            {"model": "model-c", "response": "farewell", "overall_score": 9.0, "fine-grained_score": 4.5}]},
    ]
