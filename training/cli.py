"""`intentstream train` and `intentstream retrain`: parse the arguments, then import and run the
entry script (training/train.py, training/retrain.py).

The only module that imports the entry scripts (tests/test_layout.py): parsing needs neither
torch nor scikit-learn, so `--help` and a bad value (one line, exit 2) stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from transformers.hf_argparser import HfArgumentParser

from training.arguments import RetrainArguments, parse_args

EXIT_BAD_INPUT = 2  # retrain: unusable arguments or input


def main(argv: Sequence[str] | None = None) -> int:
    """`intentstream train`; exit 1 on a diverged fine-tune (no finite validation loss)."""
    data_args, model_args, run_args = parse_args(argv)
    from training import train

    try:
        return train.run(data_args, model_args, run_args)
    except FloatingPointError as error:  # training.fit.loop.fit found no finite loss
        print(f"intentstream train: {error}", file=sys.stderr)
        return 1


def retrain_main(argv: Sequence[str] | None = None) -> int:
    """`intentstream retrain`: 0 rolled out, 3 rejected by the gate, 2 unusable input."""
    parser = HfArgumentParser(RetrainArguments)
    parser.prog = "intentstream retrain"
    try:
        (args,) = parser.parse_args_into_dataclasses(
            args=list(argv) if argv is not None else None)
    except ValueError as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from training import retrain

    code, _ = retrain.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
