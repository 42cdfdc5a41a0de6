"""The ``edgeemo`` command line (click): data, training, export, prediction, live demo, benchmarks.

Owns argument parsing and the error contract only: every command body lives in a
library module and is imported lazily inside the command (so ``edgeemo predict``
never imports torch). An :class:`EdgeemoError` becomes ``error: <one line>`` on
stderr and exit code 2; Ctrl-C exits 130 without a traceback.
"""

from __future__ import annotations

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


_register_command_modules()

if __name__ == "__main__":  # pragma: no cover
    main()
