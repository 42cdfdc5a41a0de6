"""The ``edgeemo`` command line (click): data, training, export, prediction, live demo, benchmarks.

Owns argument parsing and the error contract only: every command body lives in a
library module and is imported lazily inside the command (so ``edgeemo predict``
never imports torch). An :class:`EdgeemoError` becomes ``error: <one line>`` on
stderr and exit code 2; Ctrl-C exits 130 without a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from edgeemo import __version__
from edgeemo.cli_base import ErrorGroup
from edgeemo.errors import EdgeemoError


@click.group(cls=ErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeemo")
def main() -> None:
    """edgeemo: music emotion recognition (valence/arousal) on the edge."""


# ----------------------------------------------------------------------------- data
@main.group(cls=ErrorGroup)
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
@main.group("bundle", cls=ErrorGroup)
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


def check_output_file(path: Path, option: str) -> None:
    """Fail before any work when ``path`` cannot be an output file (a folder, or in a missing folder)."""
    if path.is_dir():
        raise EdgeemoError(f"{option} {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise EdgeemoError(f"{option} {path}: folder {path.parent} does not exist")


def atomic_write_output(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(path)`` (an atomic writer); an OS failure (disk full, ``ulimit -f``) becomes one line."""
    try:
        write(path)
    except OSError as exc:
        raise EdgeemoError(f"cannot write {path} ({exc.strerror or exc}); any previous file is unchanged") from None


SMOOTHING_OPTION = click.option(
    "--smoothing",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="EMA coefficient over the window series (0 = none).",
)


@main.command("predict")
@click.argument("inputs", nargs=-1, required=True, metavar="FILE|FOLDER|PATTERN|-...")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), help="Bundle folder [reference bundle].")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "summary"]),
    default="table",
    show_default=True,
    help="table/csv/json: every window; summary: one CSV row per file.",
)
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Write the output here instead of stdout.")
@click.option("--sidecar", is_flag=True, help="Also write FILE.edgeemo.json (summary + windows) for each file.")
@click.option(
    "--out-dir",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Put the sidecars here, in the inputs' folder layout [next to each file].",
)
@click.option("--plot", "plot_png", type=click.Path(path_type=Path), help="Save a trajectory PNG (one per file).")
@SMOOTHING_OPTION
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime threads (1..64).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr [when stderr is a terminal].")
def predict(
    inputs: tuple[str, ...],
    bundle_dir: Path | None,
    fmt: str,
    out_path: Path | None,
    sidecar: bool,
    out_dir: Path | None,
    plot_png: Path | None,
    smoothing: float,
    threads: int,
    progress: bool | None,
) -> None:
    """Valence/arousal of audio files: per window, or one summary row per file (--format summary).

    Inputs are files, folders (searched recursively for audio), glob patterns (quote them;
    ** recurses) and - (audio bytes on stdin). Files that cannot be read are reported and
    skipped; the exit code is then 1.
    """
    from edgeemo.atomic import atomic_write_json, atomic_write_text
    from edgeemo.runtime import EmotionModel
    from edgeemo.runtime.batch import Progress, expand_inputs, predict_input, sidecar_paths
    from edgeemo.runtime.limits import check_threads
    from edgeemo.runtime.output import PredictionWriter

    threads = check_threads(threads)
    if out_dir is not None and not sidecar:
        raise EdgeemoError("--out-dir says where the sidecars go: use it with --sidecar")
    if out_path is not None:
        check_output_file(out_path, "--out")
    if plot_png is not None:
        from edgeemo.runtime.plot import require_matplotlib

        require_matplotlib()  # fail before predicting anything when matplotlib is missing
    items, problems = expand_inputs(inputs)
    sidecars = sidecar_paths(items, out_dir) if sidecar else []
    plots = _plot_paths(plot_png, [Path(i.name if i.path is None else i.path) for i in items]) if plot_png else []
    failed = len(problems)
    for line in problems:
        click.echo(f"error: {line}", err=True)
    if not items:
        sys.exit(1)
    model = EmotionModel.load(bundle_dir, threads=threads)
    writer = PredictionWriter(fmt, stream=None if out_path is not None else click.get_text_stream("stdout"))
    bar = Progress(len(items), sys.stderr, progress)
    for i, item in enumerate(items):
        bar.show(item.name)
        try:
            pred = predict_input(model, item, click.get_binary_stream("stdin"), smoothing)
            if sidecar:
                atomic_write_output(sidecars[i], lambda p, pred=pred: atomic_write_json(p, pred.to_dict()))
            if plot_png is not None:
                from edgeemo.runtime.plot import plot_prediction

                plot_prediction(pred, plots[i])
        except EdgeemoError as exc:
            bar.clear()
            click.echo(f"error: {exc}", err=True)
            failed += 1
            bar.advance()
            continue
        bar.clear()
        writer.add(pred)
        bar.advance()
    bar.clear()
    writer.close()
    if out_path is not None:
        if writer.count:
            atomic_write_output(out_path, lambda p: atomic_write_text(p, writer.text()))
            click.echo(f"wrote {writer.count} prediction(s) to {out_path}", err=True)
        else:
            click.echo(f"nothing written to {out_path}: no input could be predicted", err=True)
    if failed:
        click.echo(f"{failed} of {len(items) + len(problems)} input(s) failed", err=True)
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
    from edgeemo.atomic import atomic_write_json
    from edgeemo.evaluate_cli import evaluate_model

    if json_out is not None:
        check_output_file(json_out, "--json")
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
        metrics = {k: v for k, v in report.items() if k != "table"}
        atomic_write_output(json_out, lambda p: atomic_write_json(p, metrics))
    sys.exit(0)


@main.command("bench")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), help="Bundle (default: the reference).")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Also time the run's torch teacher/student.")
@click.option("--runs", type=click.IntRange(min=50), default=100, show_default=True, help="Timed runs per model.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the numbers as JSON.")
def bench_cmd(bundle_dir: Path | None, run_dir: Path | None, runs: int, json_out: Path | None) -> None:
    """Size, 1-thread latency, throughput, streaming RTF, peak RSS and import time in one table."""
    from edgeemo.atomic import atomic_write_json
    from edgeemo.bench import markdown, run_bench

    if json_out is not None:
        check_output_file(json_out, "--json")
    result = run_bench(bundle_dir, run_dir, runs)
    click.echo(markdown(result))
    if json_out:
        atomic_write_output(json_out, lambda p: atomic_write_json(p, result))


def _add_commands() -> None:
    """The training, recipe, CV, pretrained-model and web-demo commands live in their own modules (none imports
    this one)."""
    from edgeemo.cli_cv import cv_cmd
    from edgeemo.cli_pretrained import pretrained
    from edgeemo.cli_train import COMMANDS
    from edgeemo.web.command import web_cmd

    for command in (*COMMANDS, pretrained, cv_cmd, web_cmd):
        main.add_command(command)


_add_commands()
