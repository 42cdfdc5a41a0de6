"""Pretrained third-party models ported to PyTorch, with TensorFlow-free weight conversion.

Owns :mod:`~edgeemo.pretrained.tfcheckpoint` (a reader of TF tensor-bundle
checkpoints), :mod:`~edgeemo.pretrained.musicnn_frontend` (musicnn's numpy input
features, no torch) and :mod:`~edgeemo.pretrained.musicnn` (the MSD/MTT musicnn
tagger in PyTorch, checkpoint conversion to safetensors, loading, embedding).
Nothing here is imported by the runtime.
"""
