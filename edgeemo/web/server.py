"""The local web server of the browser demo (stdlib ``http.server``, bound to 127.0.0.1).

Owns :class:`WebApp` (what is served: the page in ``edgeemo/web/static``, the bundle's
raw-audio model and its contract as ``/bundle/config.json``, onnxruntime-web's files from
an ``npm ci`` folder) and :func:`make_server`. Everything the page loads
comes from this server; a Content-Security-Policy forbids any other origin, so the page
works offline and cannot reach the network. Reading the bundle needs only the runtime
(no onnx, no torch).
"""

from __future__ import annotations

import json
import mimetypes
import os
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgeemo.bundle import Bundle, verify_bundle
from edgeemo.errors import BundleError, EdgeemoError
from edgeemo.rawaudio import hop_samples
from edgeemo.runtime.stream import QUADRANTS, check_smoothing

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
ORT_SCRIPT = "ort.wasm.min.js"  # the WASM-only build of onnxruntime-web (global `ort`)
ORT_FILES = (ORT_SCRIPT, "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_DIR_ENV = "EDGEEMO_ORT_DIR"
HOST = "127.0.0.1"
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self'; media-src 'self' blob:; worker-src 'self' blob:"
)
_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".onnx": "application/octet-stream",
}


def default_ort_dir() -> Path:
    """``$EDGEEMO_ORT_DIR``, else ``node_modules/onnxruntime-web/dist`` beside this package's ``package.json``."""
    env = os.environ.get(ORT_DIR_ENV)
    return Path(env) if env else WEB_DIR / "node_modules" / "onnxruntime-web" / "dist"


def npm_hint(ort_dir: Path) -> str:
    """The one-line instruction that installs the pinned onnxruntime-web (from the lockfile)."""
    return (
        f"onnxruntime-web is not installed ({ort_dir / ORT_SCRIPT} is missing): run "
        f"`npm ci --ignore-scripts --prefix {WEB_DIR}` (or pass --ort-dir DIR holding {', '.join(ORT_FILES)}), "
        "then reload this page"
    )


@dataclass
class WebApp:
    """What the demo serves: one verified bundle with a raw-audio model, the page, onnxruntime-web."""

    bundle: Bundle
    model_file: str
    ort_dir: Path
    smoothing: float = 0.0
    static_dir: Path = STATIC_DIR
    requests: list[str] = field(default_factory=list)  # paths asked for (tests check the page's traffic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, bundle_dir: str | Path | None, ort_dir: str | Path | None = None, smoothing: float = 0.0) -> WebApp:
        """Verify the bundle (default: the reference bundle) and pick its raw-audio ONNX model."""
        from edgeemo.bundle import default_bundle_path

        bundle = verify_bundle(Path(bundle_dir) if bundle_dir is not None else default_bundle_path())
        files = [n for n in (bundle.card.get("raw_audio_model") or {}).get("files") or [] if n.endswith(".onnx")]
        if not files or files[0] not in bundle.files:
            raise BundleError(
                f"{bundle.path}: this bundle has no raw-audio model for the page; re-export it with `edgeemo export`"
            )
        return cls(bundle, files[0], Path(ort_dir) if ort_dir else default_ort_dir(), check_smoothing(smoothing))

    @property
    def ort_available(self) -> bool:
        return all((self.ort_dir / name).is_file() for name in ORT_FILES)

    def config(self) -> dict[str, Any]:
        """``/bundle/config.json``: the raw-audio contract the page follows."""
        cfg = self.bundle.feature_config
        return {
            "name": self.bundle.name,
            "model_file": self.model_file,
            "model_url": f"/bundle/{self.model_file}",
            "model_bytes": self.bundle.files[self.model_file].get("bytes"),
            "input": (self.bundle.card.get("raw_audio_model") or {}).get("input", {}).get("name", "pcm"),
            "output": "valence_arousal",
            "sample_rate": cfg.sample_rate,
            "window_samples": cfg.window_samples,
            "hop_samples": hop_samples(cfg),
            "window_seconds": cfg.window_seconds,
            "hop_seconds": cfg.window_hop_s,
            "quadrants": dict(QUADRANTS),
            "smoothing": self.smoothing,
            "ort": {
                "available": self.ort_available,
                "script": f"/static/ort/{ORT_SCRIPT}",
                "wasm_paths": "/static/ort/",
                "message": "" if self.ort_available else npm_hint(self.ort_dir),
            },
        }

    def resolve(self, path: str) -> tuple[Path | bytes, str] | None:
        """The file (or bytes) and content type for a request path, or None (404)."""
        with self._lock:
            self.requests.append(path)
        if path in ("/", "/index.html"):
            return self.static_dir / "index.html", "text/html; charset=utf-8"
        if path == "/bundle/config.json":
            return json.dumps(self.config()).encode(), "application/json"
        if path == f"/bundle/{self.model_file}":
            return self.bundle.path / self.model_file, _TYPES[".onnx"]
        if path.startswith("/static/ort/"):
            name = path.removeprefix("/static/ort/")
            return (self.ort_dir / name, _type(name)) if name in ORT_FILES and (self.ort_dir / name).is_file() else None
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            file = self.static_dir / name
            if "/" in name or name.startswith(".") or not file.is_file():
                return None
            return file, _type(name)
        return None


def _type(name: str) -> str:
    ext = Path(name).suffix
    return _TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _handler(app: WebApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgeemo-web"

        def do_GET(self) -> None:  # http.server dispatches on these names
            self._respond(body=True)

        def do_HEAD(self) -> None:
            self._respond(body=False)

        def _respond(self, body: bool) -> None:
            found = app.resolve(self.path.split("?", 1)[0])
            if found is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            content, ctype = found
            data = content if isinstance(content, bytes) else content.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints its own lines
            return

    return Handler


def make_server(app: WebApp, port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` on 127.0.0.1:``port`` (0 picks a free port); call ``serve_forever``."""
    try:
        server = ThreadingHTTPServer((HOST, port), _handler(app))
    except OSError as exc:
        raise EdgeemoError(f"cannot listen on {HOST}:{port} ({exc.strerror or exc}); try --port 0") from None
    server.daemon_threads = True
    return server


def url(server: ThreadingHTTPServer) -> str:
    return f"http://{HOST}:{server.server_address[1]}/"
