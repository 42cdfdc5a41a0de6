"""The torch-free runtime that apps embed: bundle in, valence/arousal out.

    from edgeemo.runtime import EmotionModel
    model = EmotionModel.load()                      # the reference bundle (or a path)
    pred = model.predict_file("song.mp3")            # per-window series + summary
    stream = model.stream(44100)                     # live audio, any chunk size
    chunk = stream.push(samples)                     # windows completed by these samples

Imports only numpy, soundfile and soxr (onnxruntime when a model is loaded;
sounddevice only in :mod:`edgeemo.runtime.mic`). Never torch, timm, librosa or matplotlib.
"""

from edgeemo.bundle import Bundle, default_bundle_path, verify_bundle
from edgeemo.errors import AudioError, BundleError, EdgeemoError
from edgeemo.mood import MOOD_NAMES, MOOD_OF_QUADRANT, QUADRANT_CODES, mood_name, quadrant_code
from edgeemo.runtime.model import CSV_FIELDS, EmotionModel, Prediction
from edgeemo.runtime.stream import QUADRANTS, PredictionChunk, StreamingPredictor, quadrant, quadrant_label

__all__ = [
    "CSV_FIELDS",
    "MOOD_NAMES",
    "MOOD_OF_QUADRANT",
    "QUADRANTS",
    "QUADRANT_CODES",
    "AudioError",
    "Bundle",
    "BundleError",
    "EdgeemoError",
    "EmotionModel",
    "Prediction",
    "PredictionChunk",
    "StreamingPredictor",
    "default_bundle_path",
    "mood_name",
    "quadrant",
    "quadrant_code",
    "quadrant_label",
    "verify_bundle",
]
