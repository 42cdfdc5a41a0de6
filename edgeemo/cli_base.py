"""The error contract of every ``edgeemo`` command group: one line on stderr and a non-zero exit, no traceback.

An :class:`~edgeemo.errors.EdgeemoError` becomes ``error: <one line>`` and exit code 2;
Ctrl-C exits 130; a missing training-only dependency gets a one-line install hint.
"""

from __future__ import annotations

import sys

import click

from edgeemo.errors import EdgeemoError

TRAINING_MODULES = {"torch", "timm", "librosa", "matplotlib", "onnx", "sklearn"}


class ErrorGroup(click.Group):
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
            if exc.name and exc.name.split(".")[0] in TRAINING_MODULES:
                hint = f"this command needs the training extra ({exc.name} is missing): pip install 'edgeemo[train]'"
                click.echo(f"error: {hint}", err=True)
                sys.exit(2)
            raise
