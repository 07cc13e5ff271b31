"""Evaluation, one module per metric family (import from the module):

- ``events``: synthetic-benchmark metrics against stored ground truth (impact-event F1, colour, sound class).
- ``av_align``: AV-align as Seeing & Hearing computes it (librosa and OpenCV, the optional ``eval`` extra).
- ``frechet``: Frechet and polynomial-kernel MMD distances on features, and feature-extractor loading.
"""
