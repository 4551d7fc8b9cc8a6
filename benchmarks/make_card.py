"""Write the model card of zoo checkpoints: ``models/zoo/<name>/card.yaml`` and ``card.md``.

Everything in a card is measured from the checkpoint file now (see
:mod:`edgehal.cards`): test error per head recomputed on the full test split,
the ``edgehal train`` command that reproduces its stored config, and the
parity of its kept and pruned ONNX exports on the full test split. The
checkpoint itself is only read.

Usage::

    EDGEHAL_DATA=../shared/data python benchmarks/make_card.py models/zoo/mnist_hal_case1 [models/zoo/mnist_baseline]

An argument is a zoo folder (holding ``checkpoint.pt``) or a checkpoint file.
Exit code 1 when a card's parity check failed (the card is still written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="zoo folders (with checkpoint.pt) or checkpoint files")
    ap.add_argument("--data-dir", default=None, help="data directory (default: $EDGEHAL_DATA, else the training one)")
    ap.add_argument("--no-parity", action="store_true", help="skip the ONNX export and parity check (default: run it)")
    ap.add_argument("--quiet", action="store_true", help="only print the result lines")
    args = ap.parse_args(argv)

    from edgehal.cards import write_card
    from edgehal.errors import EdgehalError

    log = (lambda _: None) if args.quiet else print
    failed = False
    for item in args.models:
        ckpt = item / "checkpoint.pt" if item.is_dir() else item
        try:
            card_yaml, card_md = write_card(ckpt, data_root=args.data_dir, parity=not args.no_parity, log=log)
        except EdgehalError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        import yaml

        card = yaml.safe_load(card_yaml.read_text())
        errors = ", ".join(f"{h} {v:.2f}%" for h, v in card["metrics"]["test_error_percent"].items())
        parity = card.get("parity")
        status = "not checked" if parity is None else ("PASS" if parity["passed"] else "FAIL")
        failed |= parity is not None and not parity["passed"]
        print(f"{ckpt}: test error {errors}; ONNX parity {status}; wrote {card_yaml} and {card_md}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
