"""``edgeemo web``: serve the browser demo on 127.0.0.1 until Ctrl-C.

Owns the command's flags and messages only (the server is :mod:`edgeemo.web.server`). It
does not import :mod:`edgeemo.cli`; ``cli.py`` registers :data:`web_cmd` on the ``edgeemo``
group, whose error handling turns an :class:`edgeemo.errors.EdgeemoError` into ``error: ...``.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("web")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), help="Bundle folder [reference bundle].")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free one).")
@click.option(
    "--ort-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with onnxruntime-web's ort.wasm.min.js and ort-wasm-simd-threaded.{mjs,wasm} "
    "[$EDGEEMO_ORT_DIR, else edgeemo/web/node_modules/onnxruntime-web/dist].",
)
@click.option(
    "--smoothing",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="The page's initial EMA coefficient (as edgeemo live; 0 = none).",
)
def web_cmd(bundle_dir: Path | None, port: int, ort_dir: Path | None, smoothing: float) -> None:
    """Serve the browser demo (microphone or a dropped file -> valence/arousal plane) on 127.0.0.1."""
    from edgeemo.web.server import WebApp, make_server, url

    app = WebApp.open(bundle_dir, ort_dir, smoothing)
    server = make_server(app, port)
    if not app.ort_available:
        click.echo(f"warning: {app.config()['ort']['message']}", err=True)
    click.echo(f"edgeemo web: {app.bundle.name} ({app.model_file}) at {url(server)}  (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
