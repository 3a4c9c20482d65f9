"""``python -m prefdata.toy train|measure|data``: the toy world's own entry point.

The project CLI (``prefdata toy ...``) calls the same library functions.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefdata.toy")
    sub = parser.add_subparsers(dest="cmd", required=True)

    tr = sub.add_parser("train", help="train the toy policy and other model")
    tr.add_argument("--out", required=True, help="directory; gets policy/ and other/")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--quiet", action="store_true")

    me = sub.add_parser("measure", help="accuracies and the on/off-policy log-prob gap")
    me.add_argument("--policy", help="policy model dir (default: shipped weights)")
    me.add_argument("--other", help="other model dir (default: shipped weights)")
    me.add_argument("--n", type=int, default=200, help="held-out problems")
    me.add_argument("--seed", type=int, default=0, help="sampling seed")
    me.add_argument("--json", action="store_true", help="print JSON instead of text")

    da = sub.add_parser("data", help="write a split as GSM8K-style JSONL")
    da.add_argument("--out", required=True)
    da.add_argument("--split", choices=("train", "test"), default="train")
    da.add_argument("--n", type=int, default=1000)
    da.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    if args.cmd == "train":
        from .train import train_toy_models

        paths = train_toy_models(args.out, seed=args.seed, quiet=args.quiet)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
    elif args.cmd == "measure":
        from .measure import format_report, measure_with_threads

        m = measure_with_threads(args.policy, args.other, n=args.n, seed=args.seed)
        print(json.dumps(m, indent=2) if args.json else format_report(m))
    else:
        from .task import write_split

        print(write_split(args.out, args.split, args.n, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
