"""Evaluation, one module per metric family (import from the module):

- ``events``: synthetic-benchmark metrics against stored ground truth (impact-event F1, colour, sound class).
- ``av_align``: AV-align as Seeing & Hearing computes it (librosa and OpenCV, the optional ``eval`` extra).
- ``frechet``: Frechet and polynomial-kernel MMD distances on features, and feature-extractor loading
  (``vggish``: the FAD network; ``i3d``: the FVD/KVD network; both from a user's weight file).
- ``benchmark``: the synthetic benchmark and the paper's tables, run through a pipeline.
"""
