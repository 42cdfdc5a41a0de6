"""The browser demo: a static page running the bundle's raw-audio model in onnxruntime-web, served locally.

:mod:`edgeemo.web.server` serves it (stdlib, 127.0.0.1 only); :mod:`edgeemo.web.command`
is the ``edgeemo web`` command. The page itself is ``static/`` (HTML, JS, an AudioWorklet);
onnxruntime-web is installed by ``npm ci --ignore-scripts`` next to ``package.json`` here.
"""
