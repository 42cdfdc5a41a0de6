"""An app-style integration: stream audio in chunks and react when the mood quadrant changes.

The app owns the audio (here a file read in 20 ms chunks, as an audio callback would
deliver it, or the microphone with --mic); edgeemo only sees ``push(chunk)``. A
smoothed series plus a hold time keeps the mood from flickering at quadrant borders.

    python examples/mood_callback.py song.wav [--bundle DIR]
    python examples/mood_callback.py --mic [--seconds 30]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import numpy as np
import soundfile as sf

from edgeemo.runtime import EmotionModel, mood_name


class MoodWatcher:
    """Calls ``on_change(t, old, new)`` when the quadrant of the (smoothed) prediction changes
    and stays changed for ``hold_windows`` consecutive windows."""

    def __init__(
        self,
        model: EmotionModel,
        sample_rate: int,
        on_change: Callable[[float, str | None, str], None],
        smoothing: float = 0.6,
        hold_windows: int = 2,
    ) -> None:
        self.stream = model.stream(sample_rate, smoothing=smoothing)
        self.on_change, self.hold = on_change, hold_windows
        self.mood: str | None = None
        self._candidate: str | None = None
        self._count = 0

    def push(self, chunk: np.ndarray) -> None:
        self._handle(self.stream.push(chunk))

    def close(self) -> None:
        self._handle(self.stream.flush())

    def _handle(self, windows) -> None:
        for t, v, a in windows:
            q = mood_name(v, a)
            if q == self.mood:
                self._candidate, self._count = None, 0
                continue
            self._count = self._count + 1 if q == self._candidate else 1
            self._candidate = q
            if self._count >= self.hold or self.mood is None:
                old, self.mood = self.mood, q
                self._candidate, self._count = None, 0
                self.on_change(t, old, q)


def file_chunks(path: str, chunk_s: float = 0.02) -> tuple[int, Iterator[np.ndarray]]:
    info = sf.info(path)
    return info.samplerate, sf.blocks(path, blocksize=max(1, int(info.samplerate * chunk_s)), dtype="float32")


def mic_chunks(seconds: float) -> tuple[int, Iterator[np.ndarray]]:
    from edgeemo.runtime.mic import END, MicSource

    source = MicSource()  # the default input device at its native rate

    def gen() -> Iterator[np.ndarray]:
        source.start()
        try:
            got = 0
            while got < seconds * source.sample_rate:
                block = source.queue.get()
                if block is END:
                    return
                got += len(block)
                yield block
        finally:
            source.stop()

    return source.sample_rate, gen()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", nargs="?", help="audio file (omit with --mic)")
    ap.add_argument("--mic", action="store_true", help="listen to the default microphone instead")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long to listen with --mic")
    ap.add_argument("--bundle", default=None, help="bundle folder (default: the reference bundle)")
    args = ap.parse_args()
    if not args.mic and not args.audio:
        ap.error("give an audio file or --mic")

    def on_change(t: float, old: str | None, new: str) -> None:
        print(f"[{t:6.1f}s] mood {old or 'start'} -> {new}")  # an app would change lights, playlists, UI here

    model = EmotionModel.load(args.bundle)
    rate, chunks = mic_chunks(args.seconds) if args.mic else file_chunks(args.audio)
    watcher = MoodWatcher(model, rate, on_change)
    for chunk in chunks:
        watcher.push(chunk)
    watcher.close()
    print(f"final mood: {watcher.mood}")


if __name__ == "__main__":
    main()
