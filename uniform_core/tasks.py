"""The three UniForm tasks and the fixed audio-video timing they share.

One set of weights does all three; the task picks the task token and which modality is generated (the other one
is the clean condition). A model may also have learned a fourth, internal token, ``"continue"``: T2AV whose first
latent frames of both modalities are given and clean (the windows of a long clip after the first). Users never
choose it; :mod:`uniform_core.diffusion.continuation` picks it for such windows when the model has it. Time is
counted in seconds everywhere, so 17 video frames, 25 audio latent steps and one latent-frame chunk of 5 all cover
the same second.
"""

from __future__ import annotations

from .errors import InputError

TASKS = ("t2av", "a2v", "v2a")
CONTINUE = "continue"
MODEL_TASKS = (*TASKS, CONTINUE)  # the task tokens a model may have, in token order; a model has the first num_tasks
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


def model_task_index(task: str, num_tasks: int = len(MODEL_TASKS)) -> int:
    """Token id of ``task`` (one of :data:`MODEL_TASKS`) in a model with ``num_tasks`` task tokens; InputError if
    that model never learned it (a 3-task model has no ``"continue"`` token)."""
    if task not in MODEL_TASKS:
        raise InputError(f"model task must be one of {', '.join(MODEL_TASKS)}; got {task!r}")
    index = MODEL_TASKS.index(task)
    if index >= num_tasks:
        raise InputError(
            f"this DiT has {num_tasks} task tokens ({', '.join(MODEL_TASKS[:num_tasks])}) and no {task!r} token; "
            f"it is learned by a model trained with dit.num_tasks {index + 1}"
        )
    return index


def has_continue_token(num_tasks: int) -> bool:
    """Whether a model with ``num_tasks`` task tokens learned the ``"continue"`` token."""
    return num_tasks > MODEL_TASKS.index(CONTINUE)


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
