"""File identity by content: the sha256 every cache key and bundle check uses.

Owns hashing files (streamed in 1 MiB blocks), the 24-hex cache key of an identity string
(:func:`cache_key`), and a per-process memo keyed on
path, size and modification time, so a file is read once per process however
many caches ask. Caches key on the content, not on path and mtime, so copying or
re-mounting a dataset (new mtimes, same bytes) keeps every cached feature and
musicnn target valid.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20
_memo: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """Hex sha256 of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def content_digest(path: Path) -> str:
    """:func:`sha256_file`, memoised for this process on (resolved path, size, mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        _memo[key] = sha256_file(path)
    return _memo[key]


def cache_key(ident: str) -> str:
    """The 24-hex cache-entry name of an identity string (sha256 of its UTF-8)."""
    return hashlib.sha256(ident.encode()).hexdigest()[:24]
