"""Evaluation: synthetic-benchmark event/caption metrics, AV-align, Frechet and kernel distances.

librosa and OpenCV (AV-align) are the optional ``eval`` extra and load on first use.
"""

from .av_align import AVAlignDatasetResult, AVAlignResult, av_align, av_align_dataset, av_align_files
from .events import (
    EventScore,
    audio_onsets,
    colour_present,
    dominant_colour,
    event_f1,
    sound_class,
    visual_impacts,
)
from .frechet import FeatureExtractor, frechet_distance, kernel_distance, load_feature_extractor

__all__ = [
    "AVAlignDatasetResult",
    "AVAlignResult",
    "EventScore",
    "FeatureExtractor",
    "audio_onsets",
    "av_align",
    "av_align_dataset",
    "av_align_files",
    "colour_present",
    "dominant_colour",
    "event_f1",
    "frechet_distance",
    "kernel_distance",
    "load_feature_extractor",
    "sound_class",
    "visual_impacts",
]
