"""Predict a file and save its valence/arousal trajectory as a PNG (needs matplotlib: pip install 'edgeemo[plot]').

python examples/plot_trajectory.py song.mp3 trajectory.png [--bundle DIR] [--smoothing 0.6]
"""

import argparse
import sys

from edgeemo.errors import EdgeemoError
from edgeemo.runtime import EmotionModel
from edgeemo.runtime.plot import plot_prediction, require_matplotlib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio")
    ap.add_argument("png")
    ap.add_argument("--bundle", default=None, help="bundle folder (default: the reference bundle)")
    ap.add_argument("--smoothing", type=float, default=0.0, help="EMA coefficient, 0 = none")
    args = ap.parse_args()
    try:
        require_matplotlib()  # before predicting: say what to install in one line
        pred = EmotionModel.load(args.bundle).predict_file(args.audio, smoothing=args.smoothing)
        out = plot_prediction(pred, args.png)
    except EdgeemoError as exc:
        sys.exit(f"error: {exc}")
    print(f"{len(pred)} windows, on average {pred.summary['quadrant']} {pred.summary['mood']}: wrote {out}")


if __name__ == "__main__":
    main()
