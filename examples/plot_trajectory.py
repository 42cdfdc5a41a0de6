"""Predict a file and save its valence/arousal trajectory as a PNG (needs matplotlib).

python examples/plot_trajectory.py song.mp3 trajectory.png [--bundle DIR] [--smoothing 0.6]
"""

import argparse

from edgeemo.runtime import EmotionModel
from edgeemo.runtime.plot import plot_prediction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio")
    ap.add_argument("png")
    ap.add_argument("--bundle", default=None, help="bundle folder (default: the reference bundle)")
    ap.add_argument("--smoothing", type=float, default=0.0, help="EMA coefficient, 0 = none")
    args = ap.parse_args()
    pred = EmotionModel.load(args.bundle).predict_file(args.audio, smoothing=args.smoothing)
    out = plot_prediction(pred, args.png)
    print(f"{len(pred)} windows, mostly {pred.summary['quadrant']}: wrote {out}")


if __name__ == "__main__":
    main()
