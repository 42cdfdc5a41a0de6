"""The ``edgeemo pretrained`` commands: import third-party weights (musicnn) and tag a file with them.

Owns only the flags and the printing; the work is in :mod:`edgeemo.pretrained.musicnn`.
Torch is imported inside the commands, never at import time.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeemo.cli_base import ErrorGroup

_MODELS = ("MSD_musicnn", "MTT_musicnn")


@click.group("pretrained", cls=ErrorGroup)
def pretrained() -> None:
    """Pretrained third-party models (musicnn tagger, ISC licence, Jordi Pons)."""


@pretrained.command("import-musicnn")
@click.option("--model", type=click.Choice(_MODELS), default="MSD_musicnn", show_default=True)
@click.option(
    "--from",
    "source",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="musicnn package or model folder (default: the installed `musicnn` package).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Output .safetensors (default: $EDGEEMO_CACHE or ~/.cache/edgeemo, pretrained/<model>.safetensors).",
)
def import_musicnn_cmd(model: str, source: Path | None, out: Path | None) -> None:
    """Convert musicnn's TensorFlow checkpoint to safetensors (no TensorFlow needed).

    Needs the weights package: pip install --no-deps musicnn==0.1.0
    """
    from edgeemo.pretrained.musicnn import import_musicnn, load_musicnn

    path = import_musicnn(model, source=source, out=out)
    net = load_musicnn(path, model=model)
    n_params = sum(p.numel() for p in net.parameters())
    click.echo(f"wrote {path} ({model}, {n_params:,} parameters, {len(net.tags)} tags)")


@pretrained.command("tag")
@click.argument("audio_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model", type=click.Choice(_MODELS), default="MSD_musicnn", show_default=True)
@click.option(
    "--weights", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Converted weights file."
)
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="How many tags to print.")
def tag_cmd(audio_file: Path, model: str, weights: Path | None, top: int) -> None:
    """Print the top tags of AUDIO_FILE (musicnn, averaged over its 3 s patches)."""
    import torch

    from edgeemo.pretrained.musicnn import MUSICNN_FEATURES, MusicnnEmbedder, load_musicnn
    from edgeemo.runtime.audio import load_audio

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    net = load_musicnn(weights, model=model)
    signal = load_audio(audio_file, MUSICNN_FEATURES.sample_rate)
    out = MusicnnEmbedder(net).embed(signal)
    probs = out["tags"].mean(axis=0)
    click.echo(f"{audio_file.name}: {len(out['tags'])} patches of 3 s ({model})")
    for i in probs.argsort()[::-1][:top]:
        click.echo(f"  {net.tags[i]:<20s} {probs[i]:.3f}")
