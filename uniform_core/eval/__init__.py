"""Evaluation, one module per metric family (import from the module):

- ``events``: synthetic-benchmark metrics against stored ground truth (impact-event F1, colour, sound class).
- ``av_align``: AV-align as Seeing & Hearing computes it (librosa and OpenCV, the optional ``eval`` extra).
- ``frechet``: Frechet, kernel (MMD), KL and Inception Score metrics, and feature-extractor loading
  (``vggish``: FAD; ``panns``: FD, KL, IS; ``i3d``: FVD, KVD; each from a user's weight file).
- ``benchmark``: the synthetic benchmark and the paper's tables, run through a pipeline.
"""
