"""Where does valence get lost? Linear probes on clip-pooled features of a run's models.

For the 4Q songs of a run's split (train + val to fit, test to score, as in ``peers.py``)
this pools, per song, the mean and max over its 2 Hz windows of

* ``pretrained_features``: the pretrained backbone's pooled features (``pretrain/best.pt``),
* ``pretrained_musicnn``: its projection = the predicted standardised musicnn embedding,
* ``teacher_features``: the fine-tuned teacher's pooled features (``teacher/best.pt``),
* ``teacher_outputs``: the fine-tuned teacher's mean (valence, arousal),

and fits the same peer classifiers as ``peers.py`` (StandardScaler + logistic regression,
C by artist-grouped CV on the training part only). Compare with the musicnn row of
``peers.py``: a gap there means the distilled representation lost the information, not
the fine-tuning. Needs a run made with ``--unlabeled`` (it has a pretrain stage).

    .venv/bin/python benchmarks/linear_probe.py --run runs/NAME
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers

COLUMNS = ("quadrant_accuracy", "quadrant_macro_f1", "valence_auc", "arousal_auc")


def pooled_features(songs, run: Path) -> dict[str, np.ndarray]:
    import torch

    from edgeemo.data.windows import default_cache_dir, song_frames
    from edgeemo.features import FeatureConfig, frame_windows
    from edgeemo.train.checkpoint import load_checkpoint
    from edgeemo.train.models import build_model
    from edgeemo.train.pretrain import PretrainModel

    ckp = load_checkpoint(run / "pretrain" / "best.pt")
    features = FeatureConfig.from_dict(ckp["feature_config"])
    pre = PretrainModel(build_model(ckp["model_spec"]), int(sum(ckp["target_dims"])))
    pre.load_state_dict(ckp["state_dict"])
    n_emb = int(ckp["target_dims"][0])
    ckt = load_checkpoint(run / "teacher" / "best.pt")
    teacher = build_model(ckt["model_spec"])
    teacher.load_state_dict(ckt["state_dict"])
    pre.eval(), teacher.eval()
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("pretrained_features", "pretrained_musicnn", "teacher_features", "teacher_outputs")
    }
    for song in songs:
        windows = frame_windows(song_frames(song, features, default_cache_dir()), features)
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))[:, None]
        with torch.no_grad():
            f = pre.teacher.forward_features(x)
            p = pre.proj(f)[:, :n_emb]
            g = teacher.forward_features(x)
            o = teacher.head(g)
        for key, v in (("pretrained_features", f), ("pretrained_musicnn", p), ("teacher_features", g)):
            v = v.numpy()
            out[key].append(np.concatenate([v.mean(0), v.max(0)]))
        out["teacher_outputs"].append(o.numpy().mean(0))
    return {k: np.stack(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run made with --unlabeled (it has a pretrain stage)")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)
    if not (args.run / "pretrain" / "best.pt").is_file():
        raise SystemExit(f"{args.run} has no pretrain stage (train it with --unlabeled)")
    train, test = peers.split_songs(args.run)
    x_tr, x_te = pooled_features(train, args.run), pooled_features(test, args.run)
    q_tr, g_tr, q_te = [s.quadrant for s in train], [s.group for s in train], [s.quadrant for s in test]
    print("| features | dims | " + " | ".join(COLUMNS) + " |")
    print("|---|---:|" + "---:|" * len(COLUMNS))
    for key in x_tr:
        model = peers.fit_peer(x_tr[key], q_tr, g_tr, peers.make_lr, peers.LR_GRID, args.folds)
        m = peers.evaluate_peer(model, x_te[key], q_te)
        print(f"| {key} | {x_tr[key].shape[1]} | " + " | ".join(f"{m[c]:.3f}" for c in COLUMNS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
