"""Parity of edgeemo's PyTorch musicnn against the original TensorFlow graph (and musicnn's float16 trap).

Owns the TensorFlow side of the musicnn port's verification. Three subcommands:

* ``reference`` (TF venv): the committed fixture ``tests/data/musicnn_reference.npz``:
  ``musicnn_input`` of a seeded synthetic signal (a 187-frame and a 64-frame patch)
  and the original graph's outputs for MSD_musicnn.
* ``dump-real`` (TF venv): decodes real clips at 16 kHz (soundfile + soxr), runs the
  original graph on their non-overlapping 3 s patches, writes inputs + outputs to an
  npz, and counts mel bins that overflow with musicnn's float16 recipe.
* ``compare`` (edgeemo venv, needs torch): runs the port on a ``dump-real`` npz and
  prints the max abs difference per layer.

The TF venv (musicnn's TF1 layers need tf_keras)::

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install tensorflow-cpu tf_keras numpy soundfile soxr
    /work/tfvenv/bin/pip install --no-deps musicnn==0.1.0
    echo /work/main > /work/tfvenv/lib/python3.11/site-packages/edgeemo_dev.pth   # or pip install -e --no-deps
    TF_USE_LEGACY_KERAS=1 /work/tfvenv/bin/python benchmarks/musicnn_parity.py reference
    TF_USE_LEGACY_KERAS=1 /work/tfvenv/bin/python benchmarks/musicnn_parity.py dump-real --n 20 --out /tmp/real.npz
    .venv/bin/python benchmarks/musicnn_parity.py compare /tmp/real.npz
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers is gone under Keras 3
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "musicnn_reference.npz"
LAYERS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate", "tags")




class TFMusicnn:
    """The original graph (musicnn.models.define_model) restored from the package's checkpoint."""

    def __init__(self, model: str = "MSD_musicnn") -> None:
        import importlib.util

        import tensorflow as tf

        tf.compat.v1.disable_eager_execution()
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from musicnn import models  # the TF package itself, only in this script

        pkg = Path(next(iter(importlib.util.find_spec("musicnn").submodule_search_locations)))
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.x = tf.compat.v1.placeholder(tf.float32, [None, None, 96])
            logits, timbral, temporal, cnn1, cnn2, cnn3, mean_pool, max_pool, pen = models.define_model(
                self.x, False, model, 50
            )
            self.fetch = {
                "timbral": timbral,
                "temporal": temporal,
                "cnn1": tf.squeeze(cnn1, [3]),
                "cnn2": tf.squeeze(cnn2, [3]),
                "cnn3": tf.squeeze(cnn3, [3]),
                "mean_pool": mean_pool,
                "max_pool": max_pool,
                "penultimate": pen,
                "logits": logits,
                "tags": tf.nn.sigmoid(logits),
            }
            self.sess = tf.compat.v1.Session(graph=self.graph)
            tf.compat.v1.train.Saver().restore(self.sess, str(pkg / model) + "/")

    def __call__(self, x: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
        outs: dict[str, list[np.ndarray]] = {k: [] for k in self.fetch}
        for i in range(0, len(x), batch_size):
            res = self.sess.run(self.fetch, feed_dict={self.x: x[i : i + batch_size].astype(np.float32)})
            for k, v in res.items():
                outs[k].append(v)
        return {k: np.concatenate(v).astype(np.float32) for k, v in outs.items()}


def cmd_reference(args: argparse.Namespace) -> None:
    from edgeemo.pretrained.musicnn_frontend import musicnn_input, reference_signal

    mel = musicnn_input(reference_signal())
    net = TFMusicnn("MSD_musicnn")
    data: dict[str, np.ndarray] = {"x_long": mel[None, :187], "x_short": mel[None, 100:164]}
    for name in ("long", "short"):
        for k, v in net(data[f"x_{name}"]).items():
            if k != "logits":
                data[f"{k}_{name}"] = v
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **data)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")


def _decode16k(path: str) -> np.ndarray:
    import soundfile as sf
    import soxr

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return soxr.resample(x.mean(axis=1), sr, 16000).astype(np.float32)


def cmd_dump_real(args: argparse.Namespace) -> None:
    from edgeemo.features import mel_power
    from edgeemo.pretrained.musicnn_frontend import MUSICNN_FEATURES, musicnn_input, patches

    files = sorted(glob.glob(args.glob))[: args.n]
    if len(files) < args.n:
        sys.exit(f"only {len(files)} files match {args.glob}")
    net = TFMusicnn("MSD_musicnn")
    xs, clip_ids, overflow = [], [], []
    for i, f in enumerate(files):
        sig = _decode16k(f)
        p = patches(musicnn_input(sig))[: args.max_patches]
        xs.append(p)
        clip_ids += [i] * len(p)
        power16 = mel_power(sig, MUSICNN_FEATURES).T.astype(np.float16)  # musicnn's batch_data recipe
        with np.errstate(over="ignore"):
            overflow.append(float(np.mean(~np.isfinite(np.log10(10000 * power16 + 1)))))
    x = np.concatenate(xs)
    tf_out = net(x)
    # what musicnn's own float16 input does to the tags (inf bins -> saturated/NaN activations)
    f16 = []
    for f in files:
        sig = _decode16k(f)
        power16 = mel_power(sig, MUSICNN_FEATURES).T.astype(np.float16)
        with np.errstate(over="ignore"):
            f16.append(patches(np.log10(10000 * power16 + 1).astype(np.float32))[: args.max_patches])
    tf16 = net(np.concatenate(f16))["tags"]
    np.savez(
        args.out,
        x=x,
        clip=np.asarray(clip_ids),
        overflow=np.asarray(overflow),
        files=np.asarray([Path(f).name for f in files]),
        tags_f16=tf16,
        **tf_out,
    )
    ov = np.asarray(overflow)
    print(f"{len(files)} clips, {len(x)} patches -> {args.out}")
    print(
        f"float16 recipe: {int(np.sum(ov > 0))}/{len(files)} clips have overflowing (inf) mel bins; "
        f"overflowing fraction of bins: mean {ov.mean():.2%}, max {ov.max():.2%}"
    )
    _tag_spread("float32 input (ours)", tf_out["tags"], np.asarray(clip_ids))
    _tag_spread("float16 input (musicnn)", tf16, np.asarray(clip_ids), np.concatenate(f16))


def _tag_spread(label: str, tags: np.ndarray, clip: np.ndarray, x: np.ndarray | None = None) -> None:
    bad = ~np.isfinite(tags).all(axis=1)
    msg = f"{label}: {int(bad.sum())}/{len(tags)} patches with non-finite tags"
    if x is not None:
        msg += f" ({int((~np.isfinite(x)).any(axis=(1, 2)).sum())} patches hold inf input bins)"
    keep = ~bad
    per_clip = np.stack([tags[keep & (clip == c)].mean(axis=0) for c in np.unique(clip) if (keep & (clip == c)).any()])
    if len(per_clip) > 1:
        corr = np.corrcoef(per_clip)[~np.eye(len(per_clip), dtype=bool)]
        msg += (
            f"; over finite patches: across-clip std of tag prob {per_clip.std(axis=0).mean():.4f}, "
            f"mean pairwise correlation of clip tag vectors {corr.mean():.3f}"
        )
    print(msg)


def cmd_compare(args: argparse.Namespace) -> None:
    import time

    import torch

    from edgeemo.pretrained.musicnn import load_musicnn

    torch.set_num_threads(1)
    d = np.load(args.npz)
    net = load_musicnn(Path(args.weights) if args.weights else None)
    x = d["x"]
    worst = {k: 0.0 for k in LAYERS}
    top1 = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), 16):
            out = net(torch.from_numpy(x[i : i + 16]))
            for k in LAYERS:
                worst[k] = max(worst[k], float(np.abs(out[k].numpy() - d[k][i : i + 16]).max()))
            top1.append(np.argmax(out["tags"].numpy(), 1) == np.argmax(d["tags"][i : i + 16], 1))
    dt = time.perf_counter() - t0
    n_clips = len(np.unique(d["clip"]))
    print(f"{n_clips} clips, {len(x)} patches of 187 frames; torch (1 thread) {1e3 * dt / len(x):.1f} ms/patch")
    print("max abs diff vs TensorFlow:")
    for k in LAYERS:
        print(f"  {k:12s} {worst[k]:.2e}  (max |TF| {float(np.abs(d[k]).max()):.3g})")
    print(f"top-1 tag agreement: {np.mean(np.concatenate(top1)):.1%} of patches")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--out", default=str(REFERENCE))
    d = sub.add_parser("dump-real")
    d.add_argument("--glob", default="/work/shared/data/4q-dev/audio/*.mp3")
    d.add_argument("--n", type=int, default=20)
    d.add_argument("--max-patches", type=int, default=10)
    d.add_argument("--out", default="/tmp/musicnn_real.npz")
    c = sub.add_parser("compare")
    c.add_argument("npz")
    c.add_argument("--weights", default=None)
    args = ap.parse_args()
    {"reference": cmd_reference, "dump-real": cmd_dump_real, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    main()
