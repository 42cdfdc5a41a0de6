"""The one quadrant vocabulary: quadrant codes Q1..Q4 of Russell's valence/arousal plane and their mood names.

Every output that names a quadrant (predict's table, CSV and JSON, the live view and its record,
evaluate's per-song CSV) carries both: ``quadrant`` = ``Q1``..``Q4`` and ``mood`` =
``happy``/``tense``/``sad``/``calm``. Q1 = (+valence, +arousal) happy, Q2 = (-, +) tense,
Q3 = (-, -) sad, Q4 = (+, -) calm; a coordinate of exactly 0 counts as positive, so (0, 0) is Q1.
Pure Python: importing it costs nothing.
"""

from __future__ import annotations

MOOD_OF_QUADRANT: dict[str, str] = {"Q1": "happy", "Q2": "tense", "Q3": "sad", "Q4": "calm"}
QUADRANT_CODES: tuple[str, ...] = tuple(MOOD_OF_QUADRANT)
MOOD_NAMES: tuple[str, ...] = tuple(MOOD_OF_QUADRANT.values())
QUADRANT_SIGNS: dict[str, tuple[int, int]] = {"Q1": (1, 1), "Q2": (-1, 1), "Q3": (-1, -1), "Q4": (1, -1)}


def quadrant_code(valence: float, arousal: float) -> str:
    """``"Q1"``..``"Q4"`` of a (valence, arousal) point; exactly 0 counts as positive.

    NaN is neither positive nor negative: it raises ``ValueError``.
    """
    if valence != valence or arousal != arousal:
        raise ValueError(f"no quadrant for a NaN coordinate ({valence}, {arousal})")
    if valence >= 0:
        return "Q1" if arousal >= 0 else "Q4"
    return "Q2" if arousal >= 0 else "Q3"


def mood_name(valence: float, arousal: float) -> str:
    """``"happy"``/``"tense"``/``"sad"``/``"calm"`` of a (valence, arousal) point: the word of :func:`quadrant_code`."""
    return MOOD_OF_QUADRANT[quadrant_code(valence, arousal)]


def mood_of_code(code: str) -> str:
    """The mood name of a quadrant code (``"Q3"`` -> ``"sad"``); ``""`` for an empty or unknown code."""
    return MOOD_OF_QUADRANT.get(code, "")
