"""Evaluation, one module per idea (import from the module):

- ``events``: impact events in sound and picture, and event F1 between two event lists.
- ``appearance``: the object's colour per frame, its shape, the floor colour.
- ``sound``: sound class, level and impact-likeness.
- ``baselines``: uninformed outputs (shuffled pairing, periodic impacts, constant attributes): "chance".
- ``intervals``: Wilson and bootstrap intervals; ``seeds``: tuning vs report seed ranges.
- ``scoring`` / ``report`` / ``benchmark``: the synthetic benchmark and the paper's tables, run through a pipeline.
- ``ceilings``: the codecs' own round trips on real clips (no DiT), which bound what any DiT can reach.
- ``contact_sheet``: pictures of one example per task (frames and spectrograms).
- ``thumbnail``: a workflow's template-browser picture (two frames over a spectrogram) from the video it made.
- ``av_align``: AV-align as Seeing & Hearing computes it (librosa and OpenCV, the optional ``eval`` extra).
- ``frechet``: Frechet, kernel (MMD), KL and Inception Score metrics, and feature-extractor loading
  (``vggish``: FAD; ``panns``: FD, KL, IS; ``i3d``: FVD, KVD; each from a user's weight file).
"""
