"""The error contract of every ``edgeemo`` command group: one line on stderr and a non-zero exit, no traceback.

An :class:`~edgeemo.errors.EdgeemoError` becomes ``error: <one line>`` and exit code 2;
Ctrl-C exits 130; a full disk, a file over ``ulimit -f`` or a quota while writing the
output is a one-line error (exit 2) and a closed pipe (``| head``) a quiet exit 1; a
missing optional dependency gets a one-line install hint naming its extra.
"""

from __future__ import annotations

import errno
import os
import sys

import click

from edgeemo.errors import EdgeemoError

TRAINING_MODULES = {"torch", "timm", "librosa", "onnx", "sklearn"}
# errors of writing to a full disk, a file over ``ulimit -f``, a quota, or a closed pipe
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EPIPE}


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's exit-time flush cannot fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class ErrorGroup(click.Group):
    """Click group that turns edgeemo errors, and failed writes of the output, into one-line messages."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()
            return result
        except EdgeemoError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as exc:
            if exc.errno not in OUTPUT_ERRNOS:
                raise
            silence_stdout()
            if exc.errno == errno.EPIPE:  # the reader (| head) has gone: nothing more to say
                sys.exit(1)
            click.echo(f"error: cannot write the output ({exc.strerror or exc})", err=True)
            sys.exit(2)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in TRAINING_MODULES:
                hint = f"this command needs the training extra ({exc.name} is missing): pip install 'edgeemo[train]'"
                click.echo(f"error: {hint}", err=True)
                sys.exit(2)
            if exc.name and exc.name.split(".")[0] == "matplotlib":
                click.echo("error: plotting needs matplotlib: pip install 'edgeemo[plot]'", err=True)
                sys.exit(2)
            raise
