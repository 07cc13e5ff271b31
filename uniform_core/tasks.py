"""The three UniForm tasks and the fixed audio-video timing they share.

One set of weights does all three; the task picks the task token and which modality is generated (the other one
is the clean condition). Time is counted in seconds everywhere, so 17 video frames, 25 audio latent steps and one
latent-frame chunk of 5 all cover the same second.
"""

from __future__ import annotations

from .errors import InputError

TASKS = ("t2av", "a2v", "v2a")
TASK_DESCRIPTIONS = {
    "t2av": "text to audio+video: both modalities are generated",
    "a2v": "audio to video: the audio is the clean condition, video is generated",
    "v2a": "video to audio: the video is the clean condition, audio is generated",
}

VIDEO_FPS = 17  # Open-Sora VAE v1.2 micro-chunk of 17 frames = 1 s
SAMPLE_RATE = 16_000  # AudioLDM
MEL_HOP = 160  # 100 mel frames per second
FRAMES_PER_CHUNK = 17  # pixel frames per VAE micro-chunk
LATENT_FRAMES_PER_CHUNK = 5  # latent frames per micro-chunk
AUDIO_LATENT_STEPS_PER_SECOND = 25  # 100 mel frames / 4 (AudioLDM VAE time downsampling)
AUDIO_STEPS_PER_LATENT_FRAME = AUDIO_LATENT_STEPS_PER_SECOND // LATENT_FRAMES_PER_CHUNK  # = 5


def task_index(task: str) -> int:
    """Index of ``task`` in :data:`TASKS` (the task-token id)."""
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    return TASKS.index(task)


def generates_video(task: str) -> bool:
    return task_index(task) in (0, 1)


def generates_audio(task: str) -> bool:
    return task_index(task) in (0, 2)


LONG_MAX_SECONDS = 3600  # clips longer than the model's window are sampled in windows (uniform_core.long)


# Latent layout fixed by the codecs (Open-Sora VAE v1.2 for video, AudioLDM VAE for audio).
VIDEO_LATENT_CHANNELS = 4
VIDEO_DOWNSAMPLE = 8  # pixels per latent cell
PIXEL_MULTIPLE = 16  # VAE /8 times the DiT's 2x2 patch
AUDIO_LATENT_CHANNELS = 8
AUDIO_LATENT_FREQ = 16  # 64 mel bins / 4
AUDIO_SAMPLES_PER_LATENT_STEP = MEL_HOP * 4  # 640 samples = 40 ms
