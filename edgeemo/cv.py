"""Artist-grouped k-fold cross-validation of song-level quadrant systems: the honest protocol.

Owns the fold split (:func:`grouped_folds`: every song in exactly one test fold, a fold's
test artists never among its training artists, quadrants stratified, repeatable from a
seed), the interface a system implements (:class:`CVSystem`: fit on a fold's training
songs, return per-song (valence, arousal) scores for its test songs), the resumable
per-fold driver (:func:`run_system`: each fold's scores and metrics are written to
``<work>/<system>/fold-<k>.json`` as soon as they exist, and a re-run loads every fold whose
record matches the system and the fold's songs instead of recomputing it), the summary
(mean ± sd over folds, :func:`summarise`), the table and the JSON report.

Song-level metrics are those of ``edgeemo evaluate`` (:func:`edgeemo.metrics.quadrant_report`):
quadrant = signs of the song's (valence, arousal) score, V-AUC / A-AUC of the scores. A
system may instead name each song's quadrant itself (a 4-class classifier); accuracy and
macro-F1 are then those of its labels (:func:`edgeemo.peer_models.peer_metrics`).

The songs come from :func:`cv_dataset`: a quadrant-labelled folder (4Q layout, grouped by
artist) or the built-in synthesised corpus (``builtin[:N]``: each clip its own group, its
quadrant the signs of its (valence, arousal) target).

The sd is the sample standard deviation over folds (``ddof=1``). Importing this module
needs only numpy; the split imports scikit-learn when called.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeemo import metrics
from edgeemo.atomic import atomic_write_json
from edgeemo.data.types import Song
from edgeemo.errors import DataError, EdgeemoError

RECORD_FORMAT = "edgeemo-cv-fold-v2"
SUMMARY_KEYS = ("quadrant_accuracy", "quadrant_macro_f1", "valence_auc", "arousal_auc")
COLUMN_NAMES = {
    "quadrant_accuracy": "acc",
    "quadrant_macro_f1": "macro-F1",
    "valence_auc": "V-AUC",
    "arousal_auc": "A-AUC",
}


# --- the songs -----------------------------------------------------------------------------
BUILTIN = "builtin"


@dataclass(frozen=True)
class CVDataset:
    """The songs a CV runs over, the dataset's name (``4q-dev``, ``builtin-n400``) and how it was named."""

    name: str
    songs: list[Song]
    spec: str


def cv_dataset(spec: str | Path) -> CVDataset:
    """The songs of ``spec``: a quadrant-labelled folder, or ``builtin`` / ``builtin:N`` (the built-in corpus).

    The built-in corpus is the one a run's default data config builds (``data.corpus_n`` songs,
    seed ``data.corpus_seed``, ``data.corpus_duration`` s a clip), ``N`` songs when given. Its
    clips are independent draws, so each is its own group; its quadrant is the signs of the
    clip's target (:func:`edgeemo.metrics.quadrant_of`).
    """
    text = str(spec)
    head, sep, count = text.partition(":")
    if head == BUILTIN and not Path(text).exists():
        from edgeemo.config import DataConfig
        from edgeemo.data.synth import builtin_corpus

        cfg = DataConfig()
        n = cfg.corpus_n
        if sep:
            if not count.isdigit() or int(count) < 10:
                raise EdgeemoError(f"--data {text}: expected builtin or builtin:N with N >= 10 songs")
            n = int(count)
        corpus = builtin_corpus(n=n, seed=cfg.corpus_seed, duration_s=cfg.corpus_duration)
        targets = corpus.targets()
        labels = metrics.quadrant_of(targets[:, 0], targets[:, 1])
        songs = [replace(s, quadrant=str(q)) for s, q in zip(corpus.songs, labels, strict=True)]
        return CVDataset(f"{BUILTIN}-n{n}", songs, text)
    from edgeemo.data.quadrants import load_quadrants

    path = Path(text)
    songs = load_quadrants(path).songs
    if not songs:
        raise EdgeemoError(f"{path}: no songs with audio")
    return CVDataset(path.resolve().name, songs, text)


# --- folds -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fold:
    """One fold: indices into the song list of its training and its test songs."""

    index: int
    train: tuple[int, ...]
    test: tuple[int, ...]


def grouped_folds(songs: Sequence[Song], n_folds: int = 5, seed: int = 0, *, stratify: bool = True) -> list[Fold]:
    """``n_folds`` artist-disjoint folds of ``songs`` (grouped by ``Song.group``), repeatable from ``seed``.

    With ``stratify`` (the default) groups are dealt so every test fold's quadrant mix is close
    to the whole set's (scikit-learn's ``StratifiedGroupKFold`` with shuffled groups); without
    it, groups are shuffled by ``seed`` and dealt by ``GroupKFold``. Every song is in exactly
    one test fold; each fold trains on all the others.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise EdgeemoError(f"cross-validation needs at least 2 folds, got {n_folds!r}")
    groups = np.array([s.group for s in songs])
    n_groups = len(set(groups.tolist()))
    if n_groups < n_folds:
        raise DataError(f"{n_folds}-fold grouped CV needs at least {n_folds} artists (groups), got {n_groups}")
    labels = np.array([s.quadrant or "" for s in songs])
    if stratify and not all(labels):
        missing = next(s.id for s in songs if not s.quadrant)
        raise DataError(f"stratified folds need a quadrant for every song; song {missing} has none")
    if stratify:
        q, n = min(Counter(labels.tolist()).items(), key=lambda kv: kv[1])
        if n < n_folds:
            raise DataError(f"stratified {n_folds}-fold CV needs {n_folds} songs per quadrant; {q} has {n}")
    dummy = np.zeros((len(songs), 1))
    if stratify:
        from sklearn.model_selection import StratifiedGroupKFold

        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        pairs = splitter.split(dummy, labels, groups)
    else:
        from sklearn.model_selection import GroupKFold

        uniq = sorted(set(groups.tolist()))
        rank = dict(zip(uniq, np.random.default_rng(seed).permutation(len(uniq)).tolist(), strict=True))
        pairs = GroupKFold(n_splits=n_folds).split(dummy, groups=[rank[g] for g in groups])
    return [Fold(k, tuple(int(i) for i in tr), tuple(int(i) for i in te)) for k, (tr, te) in enumerate(pairs)]


def fold_digest(songs: Sequence[Song], fold: Fold) -> str:
    """sha256 of the fold's training and test song ids: a record is reused only for the very same fold."""
    ident = json.dumps([[songs[i].id for i in fold.train], [songs[i].id for i in fold.test]])
    return hashlib.sha256(ident.encode()).hexdigest()


# --- the system interface --------------------------------------------------------------------
@dataclass
class SongScores:
    """Per-song scores of a fold's test songs, in their order.

    ``valence`` / ``arousal``: continuous scores whose sign is the side of the axis (any
    scale: a regression output, a decision function); ``quadrant``: the system's own
    Q1..Q4 label per song, or None to take the signs of the scores; ``details``: JSON-able
    facts about the fold's fit (e.g. chosen hyperparameters), kept in its record.
    """

    valence: np.ndarray
    arousal: np.ndarray
    quadrant: np.ndarray | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def of(cls, value: SongScores | np.ndarray | Sequence[Sequence[float]]) -> SongScores:
        """A :class:`SongScores` as is, or an ``(n, 2)`` (valence, arousal) array."""
        if isinstance(value, SongScores):
            return value
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise EdgeemoError(f"a system must return (n_test, 2) valence/arousal scores, got shape {arr.shape}")
        return cls(arr[:, 0], arr[:, 1])


@runtime_checkable
class CVSystem(Protocol):
    """What ``edgeemo cv`` runs per fold.

    ``name`` labels the table row; ``key`` identifies the configuration (model, features,
    hyperparameters, data it adds) and is stored with every fold record, so changing it
    invalidates saved folds. ``fit_score(train, test, workdir)`` trains on ``train`` only
    (it may add data that is not in ``test``, such as the built-in corpus or unlabeled
    audio, never a song of ``test``), then returns a :class:`SongScores` (or an ``(n, 2)``
    array) for ``test`` in order. ``workdir`` is an empty-at-first folder private to the
    fold: a long system keeps its checkpoints there (e.g. ``last.pt``) and resumes from
    them when the fold is run again after an interruption. ``info(songs)`` returns extra
    facts for the report about the CV's songs (e.g. their per-clip feature cost, also when
    every fold was resumed); it may return ``{}``.
    """

    name: str
    key: str

    def fit_score(self, train: Sequence[Song], test: Sequence[Song], workdir: Path) -> SongScores | np.ndarray: ...

    def info(self, songs: Sequence[Song]) -> dict[str, Any]: ...


def fold_metrics(test: Sequence[Song], scores: SongScores) -> dict[str, float]:
    """Song-level metrics (keys of :func:`edgeemo.metrics.quadrant_report`) of one fold's scores."""
    truth = [s.quadrant for s in test]
    if not all(truth):
        raise DataError("every test song needs a quadrant label")
    v, a = np.asarray(scores.valence, np.float64), np.asarray(scores.arousal, np.float64)
    if v.shape != (len(test),) or a.shape != (len(test),):
        raise EdgeemoError(f"a system returned {v.shape}/{a.shape} scores for {len(test)} test songs")
    if scores.quadrant is None:
        return metrics.quadrant_report(truth, v, a)
    from edgeemo.peer_models import peer_metrics

    return peer_metrics(truth, np.asarray(scores.quadrant), v, a)


# --- resumable driver ------------------------------------------------------------------------
def slug(text: str) -> str:
    """A folder name for a system key: readable prefix plus a short digest (keys may hold paths)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:48] or "system"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@dataclass
class FoldResult:
    """One fold of one system: its metrics and per-song scores (as stored in its record)."""

    fold: int
    metrics: dict[str, float]
    song_ids: list[str]
    valence: list[float]
    arousal: list[float]
    quadrant: list[str] | None
    seconds: float
    resumed: bool = False
    details: dict[str, Any] | None = None


@dataclass
class SystemResult:
    """Every fold of one system plus the mean ± sd summary."""

    name: str
    key: str
    folds: list[FoldResult]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        return summarise([f.metrics for f in self.folds])


def _read_record(path: Path, key: str, digest: str) -> FoldResult | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: recompute
    if rec.get("format") != RECORD_FORMAT or rec.get("key") != key or rec.get("fold_digest") != digest:
        return None
    return FoldResult(
        int(rec["fold"]),
        {k: (math.nan if v is None else v) for k, v in rec["metrics"].items()},
        rec["song_ids"],
        rec["valence"],
        rec["arousal"],
        rec.get("quadrant"),
        float(rec.get("seconds", 0.0)),
        resumed=True,
        details=rec.get("details"),
    )


def run_system(
    system: CVSystem, songs: Sequence[Song], folds: Sequence[Fold], work: Path, *, log: Any = None
) -> SystemResult:
    """Run (or resume) ``system`` on every fold; fold ``k``'s record is ``<work>/<slug(key)>/fold-<k>.json``.

    A fold whose record exists with the same system key and the same songs is loaded, not
    recomputed; every other fold is computed and its record written atomically before the
    next starts, so an interrupted CV loses at most the fold in progress. ``log(msg)`` (if
    given) hears one line per fold.
    """
    root = Path(work) / slug(system.key)
    out: list[FoldResult] = []
    for fold in folds:
        digest = fold_digest(songs, fold)
        record = root / f"fold-{fold.index}.json"
        found = _read_record(record, system.key, digest)
        if found is None:
            train = [songs[i] for i in fold.train]
            test = [songs[i] for i in fold.test]
            workdir = root / f"fold-{fold.index}"
            workdir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            scores = SongScores.of(system.fit_score(train, test, workdir))
            fm = fold_metrics(test, scores)
            found = FoldResult(
                fold.index,
                fm,
                [s.id for s in test],
                [float(x) for x in scores.valence],
                [float(x) for x in scores.arousal],
                None if scores.quadrant is None else [str(q) for q in scores.quadrant],
                time.perf_counter() - start,
                details=scores.details,
            )
            atomic_write_json(
                record,
                json_safe(
                    {
                        "format": RECORD_FORMAT,
                        "name": system.name,
                        "key": system.key,
                        "fold": fold.index,
                        "fold_digest": digest,
                        "n_train": len(fold.train),
                        "metrics": fm,
                        "song_ids": found.song_ids,
                        "valence": found.valence,
                        "arousal": found.arousal,
                        "quadrant": found.quadrant,
                        "seconds": found.seconds,
                        "details": found.details,
                    }
                ),
            )
        if log is not None:
            how = "resumed" if found.resumed else f"{found.seconds:.1f} s"
            m = found.metrics
            log(
                f"{system.name} fold {fold.index}: F1 {m['quadrant_macro_f1']:.3f} V-AUC {m['valence_auc']:.3f} "
                f"A-AUC {m['arousal_auc']:.3f} ({how})"
            )
        out.append(found)
    return SystemResult(system.name, system.key, out, system.info(songs))


# --- summary, table, report ------------------------------------------------------------------
def summarise(fold_metrics_list: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "sd", "n"}}`` over folds for :data:`SUMMARY_KEYS` (NaN folds left out; sd ddof=1)."""
    out = {}
    for k in SUMMARY_KEYS:
        vals = np.array([m[k] for m in fold_metrics_list if k in m and not math.isnan(m[k])], dtype=np.float64)
        out[k] = {
            "mean": float(vals.mean()) if vals.size else math.nan,
            "sd": float(vals.std(ddof=1)) if vals.size >= 2 else math.nan,
            "n": int(vals.size),
        }
    return out


def mean_sd(stat: dict[str, float], digits: int = 3) -> str:
    """``"0.715 ± 0.015"`` (``"n/a"`` for a NaN mean; the mean alone with one fold)."""
    if math.isnan(stat["mean"]):
        return "n/a"
    if math.isnan(stat["sd"]):
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def format_table(results: Sequence[SystemResult]) -> str:
    """One Markdown row per system: mean ± sd of acc, macro-F1, V-AUC, A-AUC, and feature CPU ms per clip."""
    head = ["system", *(COLUMN_NAMES[k] for k in SUMMARY_KEYS), "features CPU ms / clip (1 thread)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in results:
        s = r.summary
        cpu = r.info.get("cpu_ms_per_clip")
        cells = [r.name, *(mean_sd(s[k]) for k in SUMMARY_KEYS), "n/a" if cpu is None else f"{cpu:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones and NaN/inf as None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def report(
    results: Sequence[SystemResult], songs: Sequence[Song], folds: Sequence[Fold], **context: Any
) -> dict[str, Any]:
    """The JSON-ready report: protocol, folds (test song ids), and per system its summary, folds and info."""
    return json_safe(
        {
            "protocol": {
                "n_songs": len(songs),
                "n_artists": len({s.group for s in songs}),
                "n_folds": len(folds),
                "song_level": "quadrant = signs of the song's (valence, arousal) score unless the system names one; "
                "V-AUC: Q1/Q4 vs Q2/Q3 by the valence score; A-AUC: Q1/Q2 vs Q3/Q4 by the arousal score",
                "sd": "sample standard deviation over folds (ddof=1)",
                **context,
            },
            "folds": [{"fold": f.index, "test_song_ids": [songs[i].id for i in f.test]} for f in folds],
            "systems": [
                {
                    "name": r.name,
                    "key": r.key,
                    "summary": r.summary,
                    "folds": [
                        {
                            "fold": f.fold,
                            "metrics": f.metrics,
                            "seconds": f.seconds,
                            **({"details": f.details} if f.details else {}),
                        }
                        for f in r.folds
                    ],
                    **r.info,
                }
                for r in results
            ],
            "table": format_table(results),
        }
    )


ROLE_OF_SYSTEM = {"int8": "student_int8", "fp32": "student_fp32", "teacher": "teacher"}


def expected_accuracy(report: dict[str, Any], recipe: str, digest: str, source: str = "") -> dict[str, Any]:
    """What a bundle's card states as its expected accuracy: the CV rows of ``recipe`` at config ``digest``
    (``recipe:NAME[@ROLE]`` systems of an ``edgeemo cv`` JSON report) and the peers measured beside them.

    Raises :class:`DataError` when the report has no row for that recipe and digest: figures of another
    config must not describe this model.
    """
    try:
        systems = list(report["systems"])
        protocol = dict(report["protocol"])
    except (KeyError, TypeError):
        raise DataError(f"{source or 'the CV report'} is not an `edgeemo cv --json` report") from None
    rows: dict[str, Any] = {}
    peers: dict[str, Any] = {}
    for system in systems:
        summary = {k: system["summary"][k] for k in SUMMARY_KEYS if k in system.get("summary", {})}
        n_folds = len(system.get("folds", []))
        if system.get("recipe") == recipe and system.get("recipe_digest") == digest:
            rows[ROLE_OF_SYSTEM.get(system.get("role", "int8"), system.get("role", "int8"))] = summary
        elif "recipe" not in system:
            peers[system["name"]] = summary
        if n_folds != protocol.get("k", protocol.get("n_folds")) or protocol.get("only_folds"):
            raise DataError(f"{source or 'the CV report'}: system {system['name']!r} has {n_folds} folds, not all")
    if not rows:
        raise DataError(
            f"{source or 'the CV report'} has no row for recipe {recipe} at config digest {digest}; "
            f"run `edgeemo cv --system recipe:{recipe}` first"
        )
    keep = ("n_songs", "n_artists", "n_folds", "seed", "stratified")
    described = {k: protocol[k] for k in keep if k in protocol}
    if "dataset" in protocol:  # its folder name only: a card holds no machine path
        described["dataset"] = Path(str(protocol["dataset"])).name
    return {
        "protocol": described | {"kind": "artist-grouped k-fold cross-validation, song level, mean and sd over folds"},
        "recipe": {"name": recipe, "config_digest": digest},
        "models": rows,
        "peers": peers,
        **({"source": source} if source else {}),
    }
