"""Where the real recordings live: ``../shared/data`` next to the checkout, or ``$EDGEEMO_SHARED_DATA``.

Never copied into the repo (licences); tests that need it skip when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("EDGEEMO_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
