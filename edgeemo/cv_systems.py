"""The systems ``edgeemo cv`` compares: frozen-feature peers and probes, a bundle as is, and the end-to-end hook.

Owns the :class:`~edgeemo.cv.CVSystem` implementations and the spec strings that name them:

* ``librosa-svm`` -- handcrafted librosa clip statistics -> StandardScaler + RBF SVC, every
  hyperparameter chosen by an inner artist-grouped 5-fold search on the fold's training
  songs only (:func:`edgeemo.peer_models.fit_peer`: 4-class model by macro-F1, valence-sign
  and arousal-sign models by AUC; quadrant = the 4-class prediction).
* ``musicnn-lr`` -- edgeemo's MSD-musicnn port, ``mean_pool`` and ``max_pool`` each averaged
  over the clip's 3 s patches (1,506 dims) -> standardised 4-class logistic regression, C = 0.01.
* ``yamnet-lr`` -- YAMNet int8 logits, mean and max over 0.96 s patches (1,042 dims) -> the same LR.
* ``musicnn+yamnet-lr`` -- both feature sets side by side -> the same LR.
* ``bundle-lr:PATH`` -- linear probe of an edgeemo bundle: its ONNX (valence, arousal) averaged
  over the song's 2 Hz windows (2 features) -> the same LR.
* ``checkpoint-lr:PATH.pt`` -- linear probe of a torch teacher/student checkpoint's pooled
  penultimate features, mean and max over the song's windows -> the same LR.
* ``bundle:PATH`` -- the bundle as is, no refit: its mean (valence, arousal) per song, quadrant
  = signs (the protocol of ``edgeemo evaluate``). It ignores the training songs, so a
  bundle trained on some of the CV songs is scored partly on songs it has seen.

The LR systems' quadrant is the 4-class prediction and their valence / arousal scores are
P(Q1) + P(Q4) - 1/2 and P(Q1) + P(Q2) - 1/2. Clip features come from
:mod:`edgeemo.clipfeatures` (cached per clip by content digest and extractor id).

The end-to-end hook is :class:`EndToEndSystem`: wrap any callable
``fit_score(train_songs, test_songs, workdir) -> (n_test, 2) scores`` (e.g. "train a recipe
on the fold's training songs, predict the held-out ones with the exported bundle") and
:func:`edgeemo.cv.run_system` runs it fold by fold, recording each fold on disk and resuming;
:func:`register_system` gives it a spec (``KIND:ARG``) that ``edgeemo cv --system`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeemo.clipfeatures import (
    ClipExtractor,
    ClipFeatureCache,
    bundle_extractor,
    checkpoint_extractor,
    clip_matrix,
    librosa_extractor,
    musicnn_extractor,
    yamnet_extractor,
)
from edgeemo.cv import SongScores
from edgeemo.data.types import Song
from edgeemo.errors import EdgeemoError

LR_C = 0.01
INNER_FOLDS = 5
MUSICNN_KEYS = ("mean_pool.mean", "max_pool.mean")
YAMNET_KEYS = ("logits.mean", "logits.max")
BUNDLE_KEYS = ("va.mean",)
CHECKPOINT_KEYS = ("features.mean", "features.max")
SYSTEMS = (
    "librosa-svm",
    "musicnn-lr",
    "yamnet-lr",
    "musicnn+yamnet-lr",
    "bundle-lr:PATH",
    "bundle:PATH",
    "checkpoint-lr:PATH",
)
DEFAULT_SYSTEMS = ("librosa-svm", "musicnn-lr", "yamnet-lr")


# --- classifiers -----------------------------------------------------------------------------
def lr_scores(x_train: np.ndarray, q_train: Sequence[str], x_test: np.ndarray, c: float = LR_C) -> SongScores:
    """Standardised 4-class logistic regression: quadrant = its prediction, scores = P(positive side) - 1/2."""
    from edgeemo.peer_models import make_lr

    q = np.asarray(q_train)
    if len(set(q.tolist())) < 2:
        raise EdgeemoError("a fold's training songs hold fewer than two quadrants")
    model = make_lr({"C": c}).fit(x_train, q)
    proba = model.predict_proba(x_test)
    col = {label: i for i, label in enumerate(model.classes_)}

    def p(*labels: str) -> np.ndarray:
        return sum((proba[:, col[lab]] for lab in labels if lab in col), np.zeros(len(x_test)))

    pred = np.asarray(model.classes_)[proba.argmax(1)]
    return SongScores(p("Q1", "Q4") - 0.5, p("Q1", "Q2") - 0.5, pred)


def svm_scores(x_train: np.ndarray, q_train: Sequence[str], groups: Sequence[str], x_test: np.ndarray) -> SongScores:
    """RBF SVC peer (:func:`edgeemo.peer_models.fit_peer`, inner grouped search); details = the chosen parameters."""
    from edgeemo.peer_models import SVC_GRID, fit_peer, make_svc

    model = fit_peer(x_train, q_train, groups, make_svc, SVC_GRID, INNER_FOLDS)
    pred, val, aro = model.predict(x_test)
    return SongScores(val, aro, pred, {"hyperparameters": {k: v.to_dict() for k, v in model.search.items()}})


# --- frozen-feature systems ------------------------------------------------------------------
@dataclass
class FeatureBank:
    """Clip vectors of one extractor, loaded once per process and looked up by song id."""

    make_extractor: Callable[[], ClipExtractor]
    keys: tuple[str, ...]
    cache: ClipFeatureCache
    progress: bool = True
    trained_on: str = ""  # the data the model behind the features was fitted to (a bundle card's dataset), if known
    _extractor: ClipExtractor | None = field(default=None, init=False, repr=False)
    _rows: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _cpu: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    @property
    def extractor(self) -> ClipExtractor:
        if self._extractor is None:
            self._extractor = self.make_extractor()
        return self._extractor

    def matrix(self, songs: Sequence[Song]) -> np.ndarray:
        todo = [s for s in songs if s.id not in self._rows]
        if todo:
            m = clip_matrix(todo, self.extractor, self.cache, progress=self.progress)
            x = m.select(self.keys)
            for s, row, ms in zip(todo, x, m.cpu_ms, strict=True):
                self._rows[s.id], self._cpu[s.id] = row, float(ms)
        return np.stack([self._rows[s.id] for s in songs])

    def info(self, songs: Sequence[Song]) -> dict[str, Any]:
        self.matrix(songs)
        cpu = [self._cpu[s.id] for s in songs]
        return {
            **({"trained_on": self.trained_on} if self.trained_on else {}),
            "features": {
                "extractor": self.extractor.id,
                "description": self.extractor.description,
                "keys": list(self.keys),
                "dims": int(self._rows[songs[0].id].size) if songs else None,
                "sample_rate": self.extractor.sample_rate,
            },
            "cpu_ms_per_clip": float(np.median(cpu)) if cpu else None,
            "cpu_ms_per_clip_note": f"median over {len(cpu)} clips of the process CPU time from decoded audio "
            "to the clip vector, one thread, recorded when each clip's cache entry was made",
        }


@dataclass
class ProbeSystem:
    """Frozen clip features (one or more banks side by side) -> a classifier fitted on the fold's training songs."""

    name: str
    banks: tuple[FeatureBank, ...]
    classifier: str  # "lr" or "svm"

    @property
    def key(self) -> str:
        feats = "+".join(f"{b.extractor.id}[{','.join(b.keys)}]" for b in self.banks)
        clf = f"lr(C={LR_C},4-class)" if self.classifier == "lr" else f"svm-rbf(grid,inner{INNER_FOLDS})"
        return f"probe-v1|{feats}|{clf}"

    def features(self, songs: Sequence[Song]) -> np.ndarray:
        return np.concatenate([b.matrix(songs) for b in self.banks], axis=1)

    def fit_score(self, train: Sequence[Song], test: Sequence[Song], workdir: Path) -> SongScores:
        x_tr, x_te = self.features(train), self.features(test)
        q_tr = [s.quadrant or "" for s in train]
        if self.classifier == "lr":
            return lr_scores(x_tr, q_tr, x_te)
        return svm_scores(x_tr, q_tr, [s.group for s in train], x_te)

    def info(self, songs: Sequence[Song]) -> dict[str, Any]:
        infos = [b.info(songs) for b in self.banks]
        cpu = [i["cpu_ms_per_clip"] for i in infos]
        return {
            "features": [i["features"] for i in infos],
            "cpu_ms_per_clip": None if None in cpu else float(sum(cpu)),
            "cpu_ms_per_clip_note": infos[0]["cpu_ms_per_clip_note"] + ("; summed over feature sets" * (len(cpu) > 1)),
            "classifier": self.classifier,
            **{k: i[k] for i in infos for k in ("trained_on",) if k in i},
        }


@dataclass
class BundleAsIs:
    """An edgeemo bundle scored without refitting: the song's mean (valence, arousal) over its 2 Hz windows."""

    name: str
    bank: FeatureBank

    @property
    def key(self) -> str:
        return f"bundle-as-is-v1|{self.bank.extractor.id}"

    def fit_score(self, train: Sequence[Song], test: Sequence[Song], workdir: Path) -> SongScores:
        x = self.bank.matrix(test)
        return SongScores(x[:, 0], x[:, 1])

    def info(self, songs: Sequence[Song]) -> dict[str, Any]:
        return {**self.bank.info(songs), "note": "no refit: the training songs are not used"}


# --- end-to-end hook -------------------------------------------------------------------------
FitScore = Callable[[Sequence[Song], Sequence[Song], Path], "SongScores | np.ndarray"]


@dataclass
class EndToEndSystem:
    """Any train-then-predict system under the CV protocol.

    ``fit_score(train, test, workdir)`` must train on ``train`` only (plus data that holds no
    song of ``test``), then return the test songs' (valence, arousal) scores, ``(n_test, 2)``
    (e.g. the mean over each song's 2 Hz windows of the exported bundle's predictions). It
    keeps its checkpoints in ``workdir`` (private to the fold) and resumes from them when
    called again for a fold that was interrupted. ``key`` must change whenever the recipe,
    its data or its settings change: saved folds are reused only under the same key.
    """

    name: str
    key: str
    fit: FitScore
    extra: dict[str, Any] = field(default_factory=dict)

    def fit_score(self, train: Sequence[Song], test: Sequence[Song], workdir: Path) -> SongScores | np.ndarray:
        return self.fit(train, test, workdir)

    def info(self, songs: Sequence[Song]) -> dict[str, Any]:
        return dict(self.extra)


# --- leaks -----------------------------------------------------------------------------------
def bundle_training_data(bundle: Path) -> str:
    """The dataset names a bundle's card says it was trained on (``training_data.dataset``, e.g. ``builtin+4q-dev``)."""
    from edgeemo.bundle import load_card

    data = load_card(bundle).get("training_data")
    return str(data.get("dataset", "")) if isinstance(data, dict) else ""


def leak_warning(name: str, info: dict[str, Any], dataset: str) -> str | None:
    """A one-line warning when a system's model was trained on ``dataset`` itself (its CV figures are not held out)."""
    trained_on = str(info.get("trained_on", ""))
    if dataset and dataset in trained_on.split("+"):
        return (
            f"{name}: its model was trained on {trained_on}, which holds the CV songs: "
            "its figures score songs it has learnt, not held-out ones"
        )
    return None


# --- specs -----------------------------------------------------------------------------------
SystemFactory = Callable[[str], Any]  # the text after "KIND:" -> a CVSystem
_REGISTERED: dict[str, SystemFactory] = {}


def register_system(kind: str, factory: SystemFactory) -> None:
    """Make ``KIND:ARG`` a system spec of ``edgeemo cv``: ``factory(ARG)`` returns a :class:`~edgeemo.cv.CVSystem`.

    The hook for end-to-end systems, e.g. ``register_system("recipe", lambda name:
    EndToEndSystem(f"edgeemo {name} int8", f"recipe-{name}-v1", train_and_predict(name)))`` in the
    module that owns training; built-in kinds cannot be replaced.
    """
    builtin = {s.partition(":")[0] for s in SYSTEMS}
    if not kind or ":" in kind or kind in builtin:
        raise EdgeemoError(f"cannot register a system kind {kind!r} (empty, contains ':' or built in)")
    _REGISTERED[kind] = factory


def unregister_system(kind: str) -> None:
    """Forget a kind added by :func:`register_system` (no-op when absent)."""
    _REGISTERED.pop(kind, None)


def make_system(spec: str, cache: ClipFeatureCache, *, progress: bool = True) -> Any:
    """The system a spec names: one of :data:`SYSTEMS` (``PATH``: a bundle or checkpoint) or a registered kind."""

    def bank(make: Callable[[], ClipExtractor], keys: Sequence[str]) -> FeatureBank:
        return FeatureBank(make, tuple(keys), cache, progress)

    kind, _, arg = spec.partition(":")
    if kind in _REGISTERED:
        return _REGISTERED[kind](arg)
    if kind in ("bundle", "bundle-lr"):
        if not arg:
            raise EdgeemoError(f"system {spec!r} needs a bundle folder: {kind}:PATH")
        path = Path(arg)
        if not (path / "card.json").is_file():
            raise EdgeemoError(f"system {spec!r}: {path} is not a bundle folder (no card.json)")
        b = bank(lambda: bundle_extractor(path), BUNDLE_KEYS)
        b.trained_on = bundle_training_data(path)
        if kind == "bundle":
            return BundleAsIs(f"{path.name} bundle as is (no refit)", b)
        return ProbeSystem(f"{path.name} bundle outputs (2) + LR", (b,), "lr")
    if kind == "checkpoint-lr":
        ckpt = Path(arg)
        if not arg or ckpt.suffix != ".pt" or not ckpt.is_file():
            raise EdgeemoError(f"system {spec!r} needs an existing .pt checkpoint: checkpoint-lr:PATH.pt")
        label = f"{ckpt.parent.name}/{ckpt.name}"
        return ProbeSystem(
            f"{label} pooled features + LR", (bank(lambda: checkpoint_extractor(ckpt), CHECKPOINT_KEYS),), "lr"
        )
    if arg:
        raise EdgeemoError(f"system {kind!r} takes no argument (got {spec!r})")
    table: dict[str, Callable[[], ProbeSystem]] = {
        "librosa-svm": lambda: ProbeSystem("librosa features + SVM (RBF)", (bank(librosa_extractor, ("x",)),), "svm"),
        "musicnn-lr": lambda: ProbeSystem(
            "MSD-musicnn port mean_pool+max_pool + LR", (bank(musicnn_extractor, MUSICNN_KEYS),), "lr"
        ),
        "yamnet-lr": lambda: ProbeSystem(
            "YAMNet int8 logits mean+max + LR", (bank(yamnet_extractor, YAMNET_KEYS),), "lr"
        ),
        "musicnn+yamnet-lr": lambda: ProbeSystem(
            "MSD-musicnn + YAMNet + LR",
            (bank(musicnn_extractor, MUSICNN_KEYS), bank(yamnet_extractor, YAMNET_KEYS)),
            "lr",
        ),
    }
    if kind not in table:
        raise EdgeemoError(f"unknown system {spec!r}; choose from {', '.join(SYSTEMS)}")
    return table[kind]()
