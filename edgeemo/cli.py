"""The ``edgeemo`` command line (click): data, training, export, prediction, live demo, benchmarks.

Owns argument parsing and the error contract only: every command body lives in a
library module and is imported lazily inside the command (so ``edgeemo predict``
never imports torch). An :class:`EdgeemoError` becomes ``error: <one line>`` on
stderr and exit code 2; Ctrl-C exits 130 without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeemo import __version__
from edgeemo.errors import EdgeemoError


class _Group(click.Group):
    """Click group that turns edgeemo errors into one-line messages."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except EdgeemoError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in {"torch", "timm", "librosa", "matplotlib", "onnx", "sklearn"}:
                hint = f"this command needs the training extra ({exc.name} is missing): pip install 'edgeemo[train]'"
                click.echo(f"error: {hint}", err=True)
                sys.exit(2)
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeemo")
def main() -> None:
    """edgeemo: music emotion recognition (valence/arousal) on the edge."""


def _register_command_modules() -> None:
    """Training/export commands live in their own modules; importing them registers them on ``main``."""
    import edgeemo.cli_train  # noqa: F401
    from edgeemo import cli_pretrained  # noqa: F401


# ----------------------------------------------------------------------------- data
@main.group(cls=_Group)
def data() -> None:
    """Make and check datasets (built-in corpus, DEAM, CSV manifests)."""


@data.command("synth")
@click.option("--n", "n_songs", type=click.IntRange(min=1), default=400, show_default=True, help="Number of clips.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", type=click.FloatRange(min=5.0), default=12.0, show_default=True, help="Seconds per clip.")
@click.option("--sample-rate", type=int, default=16000, show_default=True)
def data_synth(n_songs: int, out_dir: Path, seed: int, duration: float, sample_rate: int) -> None:
    """Write the built-in emotion corpus as WAV files plus manifest.csv."""
    from edgeemo.data.synth import write_corpus

    manifest = write_corpus(out_dir, n=n_songs, seed=seed, duration_s=duration, sample_rate=sample_rate, progress=True)
    click.echo(f"wrote {n_songs} clips and {manifest}")


@data.command("check")
@click.argument("path", type=click.Path(path_type=Path))
def data_check(path: Path) -> None:
    """Validate a DEAM folder, a quadrant folder or a CSV manifest and print a summary."""
    from edgeemo.data.check import check_dataset

    report = check_dataset(path)
    click.echo(report.text())
    if not report.ok:
        sys.exit(1)


# ----------------------------------------------------------------------------- runtime: bundle, predict, live
@main.group("bundle", cls=_Group)
def bundle_group() -> None:
    """Inspect exported model bundles."""


@bundle_group.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
def bundle_check(directory: Path) -> None:
    """Verify a bundle (schema, hashes, embedded cards) and print its card summary."""
    from edgeemo.bundle import card_summary, verify_bundle

    click.echo(card_summary(verify_bundle(directory)))


def _plot_paths(png: Path, files: list[Path]) -> list[Path]:
    """One PNG per file: PNG itself for one file, else PNG's stem + the file's stem (+ index if repeated)."""
    if len(files) == 1:
        return [png]
    stems = [f.stem for f in files]
    return [
        png.with_name(
            f"{png.stem}_{s}{png.suffix or '.png'}"
            if stems.count(s) == 1
            else f"{png.stem}_{i:02d}_{s}{png.suffix or '.png'}"
        )
        for i, s in enumerate(stems)
    ]


SMOOTHING_OPTION = click.option(
    "--smoothing",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="EMA coefficient over the window series (0 = none).",
)


@main.command("predict")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), help="Bundle folder [reference bundle].")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Write the output here instead of stdout.")
@click.option("--plot", "plot_png", type=click.Path(path_type=Path), help="Save a trajectory PNG (one per file).")
@SMOOTHING_OPTION
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime threads.")
def predict(
    files: tuple[Path, ...],
    bundle_dir: Path | None,
    fmt: str,
    out_path: Path | None,
    plot_png: Path | None,
    smoothing: float,
    threads: int,
) -> None:
    """Valence/arousal per window and a summary for each audio FILE (bad files are reported and skipped)."""
    from edgeemo.runtime import EmotionModel
    from edgeemo.runtime.model import format_predictions

    if plot_png is not None:
        from edgeemo.runtime.plot import _matplotlib

        _matplotlib()  # fail before predicting anything when matplotlib is missing
    model = EmotionModel.load(bundle_dir, threads=threads)
    plots = _plot_paths(plot_png, list(files)) if plot_png is not None else []
    preds, failed = [], 0
    for i, file in enumerate(files):
        try:
            pred = model.predict_file(file, smoothing=smoothing)
            if plot_png is not None:
                from edgeemo.runtime.plot import plot_prediction

                plot_prediction(pred, plots[i])
        except EdgeemoError as exc:
            click.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        preds.append(pred)
    text = format_predictions(preds, fmt)
    if out_path is not None:
        try:
            out_path.write_text(text)
        except OSError as exc:
            raise EdgeemoError(f"cannot write {out_path} ({exc.strerror})") from None
        click.echo(f"wrote {len(preds)} prediction(s) to {out_path}", err=True)
    elif text:
        click.echo(text, nl=not text.endswith("\n"))
    if failed:
        sys.exit(1)


@main.command("live")
@click.option("--device", help="Input device: index or (part of) its name [system default].")
@click.option("--list-devices", is_flag=True, help="List input devices and exit.")
@click.option("--samplerate", type=click.IntRange(min=1000), help="Capture rate [the device's native rate].")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), help="Bundle folder [reference bundle].")
@click.option(
    "--from-file", "from_file", type=click.Path(path_type=Path), help="Play FILE in real time instead of a mic."
)
@click.option("--record", type=click.Path(path_type=Path), help="Log time,valence,arousal,quadrant to this CSV.")
@click.option("--duration", type=click.FloatRange(min=0.0, min_open=True), help="Stop after this many seconds.")
@SMOOTHING_OPTION
def live(
    device: str | None,
    list_devices: bool,
    samplerate: int | None,
    bundle_dir: Path | None,
    from_file: Path | None,
    record: Path | None,
    duration: float | None,
    smoothing: float,
) -> None:
    """Live valence/arousal from a microphone (or a file played in real time); Ctrl-C stops with a summary."""
    from edgeemo.runtime import mic

    if list_devices:
        click.echo(mic.devices_table(mic.input_devices()))
        return
    if from_file is not None and (device is not None or samplerate is not None):
        raise EdgeemoError("--from-file plays a file; --device and --samplerate apply to a live input only")
    from edgeemo.runtime import EmotionModel
    from edgeemo.runtime.live import run_live

    model = EmotionModel.load(bundle_dir)
    source = mic.FileSource(from_file) if from_file is not None else mic.MicSource(device, samplerate)
    run_live(model, source, smoothing=smoothing, duration=duration, record=record)


# ----------------------------------------------------------------------------- evaluation and benchmarks
@main.command("evaluate")
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Evaluate on this run's split.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option(
    "--data", "data_path", type=click.Path(path_type=Path), help="A dataset (DEAM, manifest, 4Q) to score on."
)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the metrics as JSON.")
@click.option(
    "--predictions",
    "predictions_csv",
    type=click.Path(path_type=Path),
    help="Write per-song predictions (labels, mean prediction, quadrants, window count) as CSV.",
)
@click.option(
    "--confusion",
    "confusion_png",
    type=click.Path(path_type=Path),
    help="Write the song-level quadrant confusion matrix as a PNG (needs Q1..Q4 labels, e.g. 4Q).",
)
@click.option(
    "--skip-bad", is_flag=True, help="Score the other songs when some are missing or undecodable (default: fail)."
)
def evaluate_cmd(
    model_path: Path,
    run_dir: Path | None,
    split: str,
    data_path: Path | None,
    json_out: Path | None,
    predictions_csv: Path | None,
    confusion_png: Path | None,
    skip_bad: bool,
) -> None:
    """Metrics table for a checkpoint (.pt) or an exported bundle on a run split or any dataset.

    Songs with quadrant labels (4Q) also get song-level quadrant accuracy, macro-F1,
    valence/arousal AUC, per-class F1 and the confusion matrix.
    """
    from edgeemo.evaluate_cli import evaluate_model

    report = evaluate_model(
        model_path,
        run_dir=run_dir,
        split=split,
        data_path=data_path,
        predictions_csv=predictions_csv,
        confusion_png=confusion_png,
        skip_bad=skip_bad,
    )
    click.echo(report["table"])
    if json_out:
        json_out.write_text(json.dumps({k: v for k, v in report.items() if k != "table"}, indent=2))
    sys.exit(0)


@main.command("bench")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), help="Bundle (default: the reference).")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Also time the run's torch teacher/student.")
@click.option("--runs", type=click.IntRange(min=50), default=100, show_default=True, help="Timed runs per model.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the numbers as JSON.")
def bench_cmd(bundle_dir: Path | None, run_dir: Path | None, runs: int, json_out: Path | None) -> None:
    """Size, 1-thread latency, throughput, streaming RTF, peak RSS and import time in one table."""
    from edgeemo.bench import markdown, run_bench

    result = run_bench(bundle_dir, run_dir, runs)
    click.echo(markdown(result))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))


_register_command_modules()
