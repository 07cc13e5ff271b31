"""Reading and writing video and audio with PyAV, and conforming them to what the model needs.

Time is counted in seconds from the first frame of the stream that is read. Video is always placed on the timeline
by its presentation timestamps (a variable-frame-rate file keeps its timing and its length), frames are scaled to
the requested size while they are decoded, and every file is written whole or not at all, byte-identical for the
same input.

Modules: ``clips`` (the types), ``in_memory`` (a file's bytes in place of its path), ``validation`` (checks of
given values), ``probe`` (headers), ``video_reader`` / ``audio_reader`` (decoding), ``conform`` (rate, size and
length changes with notes), ``writing`` (MP4 out), ``comfy`` (ComfyUI AUDIO / VIDEO interop).
"""

from .audio_reader import read_audio
from .clips import AudioClip, MediaInfo, VideoClip
from .comfy import file_source, from_comfy_audio, from_comfy_video, to_comfy_audio
from .conform import conform_audio, conform_video, resample_audio, resample_fps, resize_center_crop, to_mono
from .in_memory import MediaBytes
from .probe import probe
from .video_reader import picture_size, read_video
from .writing import AAC_SAMPLE_RATES, write_mp4

__all__ = [
    "AAC_SAMPLE_RATES",
    "AudioClip",
    "MediaBytes",
    "MediaInfo",
    "VideoClip",
    "conform_audio",
    "conform_video",
    "file_source",
    "from_comfy_audio",
    "from_comfy_video",
    "picture_size",
    "probe",
    "read_audio",
    "read_video",
    "resample_audio",
    "resample_fps",
    "resize_center_crop",
    "to_comfy_audio",
    "to_mono",
    "write_mp4",
]
