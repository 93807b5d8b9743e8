"""Does affectsynth augmentation make an expression classifier better? The experiment, on your data.

    python scripts/augment_experiment.py --data ../shared/faces/dev --folds 7 --seeds 1-2 --size 64 --epochs 40
                                         [--intensities 0.7,0.85,1] [--work DIR] [--format F]

DATA: ``<subject>/<label>.<ext>`` folders, a CSV ``path,label[,subject][,valence,arousal]``, or RAF-DB basic,
AffectNet, FER2013, CK+ (``--format``, detected by default; see :mod:`affectsynth.experiment.datasets`).
Conditions, per subject-disjoint fold and seed, the same small CNN and number of steps: real; real + classic
augmentation; real + affectsynth renders; affectsynth only (neutral photos + their renders), both with the
classic augmentation too; VA regression where VA labels exist. The synthesized faces are made by
``affectsynth batch`` with its fit cache under ``--work`` (default ``work/augment_experiment``), so a rerun
reuses them. Prints the report; the last line
holds `key=value` figures (acc_real=, acc_classic=, acc_synth_aug=, acc_synth_only=, macro_f1_...=, with
their *_std, and ccc_valence=, ccc_arousal= where VA exists).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from affectsynth.errors import AffectsynthError, InputError  # noqa: E402
from affectsynth.experiment import ExperimentOptions, run_experiment  # noqa: E402
from affectsynth.experiment.datasets import READERS  # noqa: E402


def seeds(text: str) -> tuple[int, ...]:
    """``"1-3"`` -> (1, 2, 3); ``"1,5"`` -> (1, 5); ``"2"`` -> (2,)."""
    try:
        if "-" in text:
            first, last = (int(x) for x in text.split("-"))
            return tuple(range(first, last + 1))
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds {text!r}: write 1-3 or 1,5 or 2") from None


def intensities(text: str) -> tuple[float, ...]:
    """``"0.7,1"`` -> (0.7, 1.0), each in (0, 1]."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"intensities {text!r}: write e.g. 0.7,1 (each in (0, 1])")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=seeds, default=(1,), help="run seeds: 1-3, 1,5 or 2 (default 1)")
    parser.add_argument("--size", type=int, default=112, help="aligned crop side, px (default 112)")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the real training photos (default 30)")
    parser.add_argument("--format", default="auto", choices=["auto", *READERS])
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "augment_experiment")
    parser.add_argument("--workers", type=int, default=2, help="affectsynth batch render processes (default 2)")
    parser.add_argument("--intensities", type=intensities, default=(1.0,),
                        help="render each other class once per intensity, e.g. 0.7,0.85,1 (default 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for training (default 1: small batches gain nothing from more)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = ExperimentOptions(data=args.data, work=args.work, folds=args.folds, seeds=args.seeds, size=args.size,
                                epochs=args.epochs, format=args.format, workers=args.workers,
                                intensities=args.intensities)
    try:
        report = run_experiment(options, log=lambda message: print(message, file=sys.stderr, flush=True))
    except InputError as e:
        print(f"augment_experiment: error: {e}", file=sys.stderr)
        return 2
    except AffectsynthError as e:
        print(f"augment_experiment: error: {e}", file=sys.stderr)
        return 1
    print(report.text)
    print(report.key_values())
    return 0


if __name__ == "__main__":
    sys.exit(main())
