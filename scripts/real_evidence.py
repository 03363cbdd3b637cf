"""Write a trained run's face-free evidence (settings, history, evaluation, retrieval, label rates,
mean Grad-CAM on CelebA's landmark template, the astronaut's answers, the model card MODEL_CARD.md)
into a folder to commit.

    python scripts/real_evidence.py runs/celeba-cpu --data "$CELEBA_ROOT" --out docs/results/celeba-cpu

The run folder must hold a finished run (model.keras, best.keras); its eval_val.json and
retrieval_val.json are copied where present, else computed (which also stores tuned
thresholds in the run's config.json, as ``celebalib evaluate`` does). No image, crop or
weight is written: the maps are averages over many faces, drawn on the template's landmarks.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished run folder (runs/NAME)")
    parser.add_argument("--data", required=True, help="the CelebA root the run was trained on (CELEBA_ROOT)")
    parser.add_argument("--out", required=True, help="the folder to write, e.g. docs/results/NAME")
    parser.add_argument("--faces", type=int, default=200, help="faces per attribute in the mean Grad-CAM (200)")
    parser.add_argument("--split", default="val", help="split to evaluate and draw Grad-CAM faces from first (val)")
    args = parser.parse_args(argv)
    if args.faces < 1:
        parser.error(f"--faces {args.faces}: expected a whole number of faces, at least 1")

    from celebalib import data, evidence, runs
    from celebalib.errors import CelebalibError

    try:
        run = runs.open_run(args.run)
        table = data.load_celeba(args.data)
        written = evidence.write_evidence(run, table, args.out, faces=args.faces, split=args.split)
    except CelebalibError as error:
        print(f"real_evidence: {error}", file=sys.stderr)
        return 1
    print("\n".join(f"wrote {path}" for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
