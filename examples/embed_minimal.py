"""Embed edgeemo in an app: load the reference bundle, predict a file, print the mood.

python examples/embed_minimal.py song.mp3 [BUNDLE_DIR]
"""

import sys

from edgeemo.runtime import EmotionModel

model = EmotionModel.load(sys.argv[2] if len(sys.argv) > 2 else None)  # None: the reference bundle
pred = model.predict_file(sys.argv[1])
s = pred.summary
print(f"{sys.argv[1]}: valence {s['valence']:+.2f}, arousal {s['arousal']:+.2f} -> {s['quadrant']} {s['mood']}")
