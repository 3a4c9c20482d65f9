"""A small mutation-testing pass: break the code on purpose, one operator at a time, and see
whether the tests notice.

For each target module it lists every mutation site the operators below find (skipping
docstrings, other strings and type annotations), takes a seeded sample of at most
`--per-file` of them, and for each applies the one-token change in place, runs the target's
test modules (`pytest -x -q -m "not slow"`, with a timeout), and restores the file. A mutant
is *killed* when the tests fail (or time out), *survived* when they pass. The file is always
restored, also on Ctrl-C or SIGTERM. Run it on a clean checkout (or a copy): it edits the
target files in place while a mutant runs.

Operators: arithmetic (+ -, * /), comparison (< <=, > >=, == !=), boolean (and or),
bitwise mask logic (& |), unary minus and `not` removed, numeric constants (0 -> 1,
n -> n + 1) and True <-> False.

    python scripts/mutation_test.py                      # all targets, 20 mutants each
    python scripts/mutation_test.py --target select --per-file 5 --list

Writes a JSON report (`--out`, default mutation-report.json in the current directory);
docs/testing.md lists the survivors of the last full run and what was done about each.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# target -> (module, the fast test modules that cover it)
TARGETS = {
    "losses": ("prefdata/train/losses.py", ["tests/train/test_losses.py", "tests/train/test_loss_config.py"]),
    "score": ("prefdata/score.py", ["tests/test_score.py"]),
    "select": ("prefdata/select.py", ["tests/test_select.py", "tests/test_filters.py"]),
}
SWAPS = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*", ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=",
         ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "==", ast.And: "or", ast.Or: "and", ast.BitAnd: "|",
         ast.BitOr: "&"}
SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
           ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.And: "and", ast.Or: "or", ast.BitAnd: "&",
           ast.BitOr: "|"}


@dataclass
class Mutant:
    target: str
    line: int
    start: int  # character offsets into the file's text
    end: int
    before: str
    after: str
    status: str = "not run"
    seconds: float = 0.0

    def describe(self) -> str:
        return f"{TARGETS[self.target][0]}:{self.line}: `{self.before}` -> `{self.after}`"


def _offsets(text: str) -> list[int]:
    starts, at = [], 0
    for line in text.splitlines(keepends=True):
        starts.append(at)
        at += len(line)
    return starts


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes inside annotations and docstrings: changing them changes no behaviour here."""
    skip: set[int] = set()

    def mark(node):
        for sub in ast.walk(node):
            skip.add(id(sub))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs,
                        *filter(None, [node.args.vararg, node.args.kwarg])]:
                if arg.annotation is not None:
                    mark(arg.annotation)
            if node.returns is not None:
                mark(node.returns)
        if isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                mark(first)
    return skip


def find_mutants(target: str) -> list[Mutant]:
    path = ROOT / TARGETS[target][0]
    text = path.read_text()
    tree = ast.parse(text)
    starts = _offsets(text)
    skip = _skipped_nodes(tree)
    out: list[Mutant] = []

    def at(line, col):
        return starts[line - 1] + col

    def operator_between(op, left, right, line):
        """The operator token between two operands, located in the text (not in a comment)."""
        lo, hi = at(left.end_lineno, left.end_col_offset), at(right.lineno, right.col_offset)
        symbol = SYMBOLS[type(op)]
        found = text.find(symbol, lo, hi)
        while found >= 0 and "#" in text[text.rfind("\n", 0, found) + 1:found]:
            found = text.find(symbol, found + 1, hi)
        if found >= 0:
            out.append(Mutant(target, line, found, found + len(symbol), symbol, SWAPS[type(op)]))

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in SWAPS:
            operator_between(node.op, node.left, node.right, node.lineno)
        elif isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                if type(op) in SWAPS:
                    operator_between(op, left, right, node.lineno)
                left = right
        elif isinstance(node, ast.BoolOp):
            for left, right in zip(node.values, node.values[1:]):
                operator_between(node.op, left, right, node.lineno)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            lo = at(node.lineno, node.col_offset)
            hi = lo + (1 if isinstance(node.op, ast.USub) else 3)  # the operator alone, not a "(" after it
            while text[hi] in " \t":
                hi += 1
            out.append(Mutant(target, node.lineno, lo, hi, text[lo:hi], ""))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            lo, hi = at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
            if isinstance(node.value, bool):
                new = str(not node.value)
            elif node.value == 0:
                new = "1"
            else:
                new = repr(node.value + 1)
            out.append(Mutant(target, node.lineno, lo, hi, text[lo:hi], new))
    out.sort(key=lambda m: m.start)
    return out


def run_mutant(mutant: Mutant, timeout: int) -> None:
    path = ROOT / TARGETS[mutant.target][0]
    original = path.read_text()
    mutated = original[:mutant.start] + mutant.after + original[mutant.end:]
    started = time.monotonic()
    try:
        compile(mutated, str(path), "exec")
    except SyntaxError:
        mutant.status = "invalid"
        return
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        path.write_text(mutated)
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               "-m", "not slow", *TARGETS[mutant.target][1]], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        mutant.status = "survived" if done.returncode == 0 else "killed"
    except subprocess.TimeoutExpired:
        mutant.status = "killed (timeout)"
    finally:
        path.write_text(original)
        mutant.seconds = round(time.monotonic() - started, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="module(s) to mutate (default: all)")
    parser.add_argument("--per-file", type=int, default=20, help="mutants sampled per module (seeded)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test run")
    parser.add_argument("--list", action="store_true", help="list the sampled mutants, run nothing")
    parser.add_argument("--out", type=Path, default=Path("mutation-report.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the mutated file is restored

    chosen: list[Mutant] = []
    totals = {}
    for target in args.target or sorted(TARGETS):
        sites = find_mutants(target)
        totals[target] = len(sites)
        picked = random.Random(f"{args.seed}/{target}").sample(sites, min(args.per_file, len(sites)))
        chosen += sorted(picked, key=lambda m: m.start)
    if args.list:
        for m in chosen:
            print(m.describe())
        return 0
    for i, mutant in enumerate(chosen, 1):
        run_mutant(mutant, args.timeout)
        print(f"[{i}/{len(chosen)}] {mutant.status:16s} {mutant.seconds:6.1f}s  {mutant.describe()}", flush=True)
    survivors = [m for m in chosen if m.status == "survived"]
    report = {"sites": totals, "sampled": len(chosen), "seed": args.seed, "per_file": args.per_file,
              "killed": sum(m.status.startswith("killed") for m in chosen), "survived": len(survivors),
              "invalid": sum(m.status == "invalid" for m in chosen), "mutants": [asdict(m) for m in chosen]}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['killed']} killed, {report['survived']} survived, {report['invalid']} invalid "
          f"of {len(chosen)} sampled ({totals} sites)")
    for m in survivors:
        print(f"  survived: {m.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
