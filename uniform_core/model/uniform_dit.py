"""The UniForm DiT: one STDiT3 over a unified audio-video token sequence, one task token per frame.

For every video latent frame the sequence is

    [ video patch tokens (H/2 * W/2) | audio tokens of the same 200 ms (5 latent steps) | task token ]

so spatial attention mixes the two modalities and the task within a frame, and temporal attention (RoPE over the
frame index, as in STDiT3) runs across frames at every token position. Open-Sora's modules keep their names, so an
STDiT-v3 checkpoint maps onto the shared part by key; the audio embedder, audio head and task embedding are new.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..checkpoint import load_matching, load_state_dict_file, read_component_config, save_component
from ..empty_init import empty_init
from ..errors import InputError
from ..tasks import LATENT_FRAMES_PER_CHUNK, MODEL_TASKS, PIXEL_MULTIPLE, TASKS, VIDEO_DOWNSAMPLE, model_task_index
from .layers import AudioPatchEmbed, FinalLayer, sincos_pos_embed_2d
from .stdit3 import STDiT3Backbone, STDiT3Config, default_conditions

CHECKPOINT_KIND = "dit"


@dataclass(frozen=True)
class UniFormConfig(STDiT3Config):
    """STDiT3 fields (Open-Sora names) plus the audio latent layout and the number of task tokens."""

    caption_channels: int = 1024  # FLAN-T5-large
    class_dropout_prob: float = 0.5  # read by the trainer; the model itself never drops captions
    audio_in_channels: int = 8  # AudioLDM VAE latent channels
    audio_freq: int = 16  # audio latent frequency bins (64 mel bins / 4)
    audio_patch_size: tuple[int, int] = (1, 4)  # (time steps, frequency bins) per audio token
    audio_steps_per_frame: int = 5  # audio latent steps (40 ms each) per video latent frame (200 ms)
    num_tasks: int = len(TASKS)  # task tokens: t2av, a2v, v2a, and with 4 the internal "continue" (tasks.py)

    def __post_init__(self):
        super().__post_init__()
        if self.num_tasks not in (len(TASKS), len(MODEL_TASKS)):
            raise InputError(
                f"num_tasks must be {len(TASKS)} ({', '.join(TASKS)}) or {len(MODEL_TASKS)} (and "
                f"{MODEL_TASKS[-1]!r}); got {self.num_tasks!r}"
            )
        object.__setattr__(self, "audio_patch_size", tuple(int(p) for p in self.audio_patch_size))
        pt, pf = self.audio_patch_size
        if self.patch_size[0] != 1:
            raise InputError(f"patch_size[0] must be 1 (tokens are grouped per latent frame); got {self.patch_size}")
        if self.audio_steps_per_frame % pt or self.audio_freq % pf:
            raise InputError(
                f"audio_patch_size {self.audio_patch_size} must divide (audio_steps_per_frame, audio_freq) = "
                f"({self.audio_steps_per_frame}, {self.audio_freq})"
            )

    @property
    def audio_out_channels(self) -> int:
        return self.audio_in_channels * 2 if self.pred_sigma else self.audio_in_channels

    @property
    def audio_token_grid(self) -> tuple[int, int]:
        """(time rows, frequency columns) of audio tokens in one video latent frame."""
        return self.audio_steps_per_frame // self.audio_patch_size[0], self.audio_freq // self.audio_patch_size[1]

    @property
    def audio_tokens_per_frame(self) -> int:
        rows, cols = self.audio_token_grid
        return rows * cols

    def tokens_per_frame(self, latent_h: int, latent_w: int) -> int:
        """Sequence length of one frame: video patches + audio tokens + 1 task token."""
        return (latent_h // self.patch_size[1]) * (latent_w // self.patch_size[2]) + self.audio_tokens_per_frame + 1


PRESETS: dict[str, UniFormConfig] = {
    # STDiT3-XL/2 size, the paper's model, with FLAN-T5-large text.
    "xl": UniFormConfig(hidden_size=1152, depth=28, num_heads=16, caption_channels=1024, model_max_length=300),
    # The embedded default that the project trains itself (DESIGN section 5).
    # Audio tokens of 1 x 8 latent cells (10 per frame, not 20) make a training step 25 % cheaper on a CPU.
    "tiny": UniFormConfig(
        hidden_size=128, depth=4, num_heads=4, caption_channels=64, model_max_length=64, audio_patch_size=(1, 8)
    ),
}


def _host_checkable(t: torch.Tensor) -> bool:
    """Whether a value check may read ``t``: reading a GPU tensor would stall every sampling step until the GPU
    catches up (and a compiled graph would break there), so GPU inputs are checked by shape only; the pipeline
    builds them from values it checked on the host."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


class UniFormDiT(STDiT3Backbone):
    """Joint audio-video noise (and variance) predictor for the t2av, a2v and v2a tasks (and, with
    ``num_tasks`` 4, the internal "continue" task)."""

    config: UniFormConfig

    def __init__(self, config: UniFormConfig):
        super().__init__(config, learn_null_caption=True)
        c = config
        self.audio_embedder = AudioPatchEmbed(
            c.audio_patch_size, c.audio_in_channels, c.hidden_size, c.audio_steps_per_frame
        )
        num_patch = c.audio_patch_size[0] * c.audio_patch_size[1]
        self.audio_final_layer = FinalLayer(c.hidden_size, num_patch, c.audio_out_channels)
        self.task_embedding = nn.Embedding(c.num_tasks, c.hidden_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Open-Sora's init for the shared part; task embeddings start small like DiT's label embeddings."""
        super().initialize_weights()
        nn.init.normal_(self.task_embedding.weight, std=0.02)

    def forward(
        self, video, audio, timestep, y, mask=None, task=None, fps=None, height=None, width=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict noise and variance for both modalities at one shared diffusion timestep.

        video: (B, 4, T, H, W) video latent, T a multiple of 5 (whole 17-frame chunks), H and W even (16 px);
        audio: (B, 8, 5T, audio_freq) audio latent covering the same seconds;
        timestep: (B,) or scalar float on the 0..1000 scale; y: (B, L, caption_channels) text-encoder states
        (or the null caption); mask: (B, L) text mask, nonzero = real token, None = all L tokens;
        task: (B,) long index into uniform_core.tasks.MODEL_TASKS, below ``num_tasks`` (an int or task name
        applies to the whole batch);
        fps: (B,) frames per second (default 17); height, width: pixel size (default 8 x latent size).
        Returns float32 (video_out (B, 8, T, H, W), audio_out (B, 16, 5T, audio_freq)); the first half of the
        channels is eps, the second the variance value v in [-1, 1] (IDDPM learned range).
        Captions are never dropped here: training code passes :meth:`null_caption` itself.
        """
        c = self.config
        self.check_latent_shapes(tuple(video.shape), tuple(audio.shape))
        B, _, T, H, W = video.shape
        timestep, task = self._check_conditions(B, timestep, y, mask, task, video.device)
        fps, height, width = default_conditions(B, H, W, fps, height, width, video.device)

        t, t_mlp = self.embed_time(timestep, fps)
        y, y_mask = self.embed_text(y, mask)
        rows, cols = H // c.patch_size[1], W // c.patch_size[2]
        video_tokens = self.x_embedder(video.to(self.dtype)) + self.video_pos_embed(rows, cols, height, width)
        audio_tokens = self.audio_embedder(audio.to(self.dtype)) + self.audio_pos_embed()
        task_tokens = self.task_embedding(task)[:, None, None].expand(B, T, 1, c.hidden_size)

        # Latent frame t holds video frame t and audio steps 5t..5t+4 (the same 200 ms): one frame index for both.
        tokens = torch.cat([video_tokens, audio_tokens, task_tokens], dim=2)  # (B, T, S_video + S_audio + 1, C)
        tokens = self.run_blocks(tokens, y, y_mask, t_mlp)
        video_tokens, audio_tokens, _ = tokens.split([rows * cols, c.audio_tokens_per_frame, 1], dim=2)

        video_out = rearrange(
            self.final_layer(video_tokens, t),
            "B T (h w) (hp wp c) -> B c T (h hp) (w wp)",
            h=rows,
            hp=c.patch_size[1],
            wp=c.patch_size[2],
        )
        audio_out = rearrange(
            self.audio_final_layer(audio_tokens, t),
            "B T (k f) (kp fp c) -> B c (T k kp) (f fp)",
            k=c.audio_token_grid[0],
            kp=c.audio_patch_size[0],
            fp=c.audio_patch_size[1],
        )
        return video_out.float(), audio_out.float()

    def audio_pos_embed(self) -> torch.Tensor:
        """Fixed 2-D sin-cos embedding of (latent step within the frame, frequency band): (S_audio, C)."""
        rows, cols = self.config.audio_token_grid
        device, dtype, dim = self.audio_embedder.proj.weight.device, self.dtype, self.config.hidden_size
        key = ("audio", rows, cols, device, dtype)
        return self.pos_tables.get(key, lambda: sincos_pos_embed_2d(rows, cols, dim, device=device).to(dtype))

    def null_caption(self, batch: int, length: int) -> torch.Tensor:
        """The learned null caption for classifier-free guidance: (batch, length, caption_channels)."""
        if not 1 <= length <= self.config.model_max_length:
            raise InputError(f"null caption length must be 1..{self.config.model_max_length} tokens; got {length}")
        return self.y_embedder.null(batch, length)

    def check_latent_shapes(self, video_shape: tuple, audio_shape: tuple) -> None:
        """Raise InputError unless video (B, 4, T, H, W) and audio (B, 8, 5T, F) latents fit this model."""
        c = self.config
        video_want = f"(B, {c.in_channels}, T, H, W)"
        audio_want = f"(B, {c.audio_in_channels}, {c.audio_steps_per_frame}*T, {c.audio_freq})"
        if len(video_shape) != 5 or video_shape[1] != c.in_channels:
            raise InputError(f"video latent must have shape {video_want}; got {tuple(video_shape)}")
        if len(audio_shape) != 4 or audio_shape[1] != c.audio_in_channels or audio_shape[3] != c.audio_freq:
            raise InputError(f"audio latent must have shape {audio_want}; got {tuple(audio_shape)}")
        B, _, T, H, W = video_shape
        if T < 1 or T % LATENT_FRAMES_PER_CHUNK:
            raise InputError(
                f"video latent frames T must be a positive multiple of {LATENT_FRAMES_PER_CHUNK} "
                f"(whole 17-frame chunks = whole seconds); got T={T}"
            )
        if H < 1 or W < 1 or H % c.patch_size[1] or W % c.patch_size[2]:
            raise InputError(
                f"video size must be a positive multiple of {PIXEL_MULTIPLE} px, i.e. latent H and W multiples of "
                f"{c.patch_size[1]}; got latent {H}x{W} ({H * VIDEO_DOWNSAMPLE}x{W * VIDEO_DOWNSAMPLE} px)"
            )
        if audio_shape[0] != B or audio_shape[2] != c.audio_steps_per_frame * T:
            raise InputError(
                f"audio latent must cover the video's time: shape {audio_want} with B={B}, T={T}, i.e. ({B}, "
                f"{c.audio_in_channels}, {c.audio_steps_per_frame * T}, {c.audio_freq}); got {tuple(audio_shape)}"
            )

    def _check_conditions(self, batch, timestep, y, mask, task, device):
        """Validate the conditioning inputs; returns timestep (B,) float32 and task (B,) long."""
        c = self.config
        timestep = torch.as_tensor(timestep, dtype=torch.float32, device=device)
        if timestep.numel() not in (1, batch):
            raise InputError(f"timestep must be a scalar or have shape ({batch},); got {tuple(timestep.shape)}")
        if y.ndim != 3 or y.shape[0] != batch or y.shape[2] != c.caption_channels or y.shape[1] < 1:
            raise InputError(f"y must have shape ({batch}, L, {c.caption_channels}); got {tuple(y.shape)}")
        if mask is not None:
            if mask.ndim != 2 or mask.shape[1] != y.shape[1] or batch % mask.shape[0]:
                raise InputError(f"mask must have shape ({batch}, {y.shape[1]}); got {tuple(mask.shape)}")
            if _host_checkable(mask) and not bool((mask != 0).any(dim=1).all()):
                raise InputError("mask must mark at least one real text token per sample (the null caption if empty)")
        tasks = MODEL_TASKS[: c.num_tasks]
        if task is None:
            raise InputError(f"task is required: (B,) indices into {tasks}, an index, or a task name")
        if isinstance(task, str):
            task = model_task_index(task, c.num_tasks)
        task = torch.as_tensor(task, device=device).reshape(-1)
        if (
            task.is_floating_point()
            or task.numel() not in (1, batch)
            or (_host_checkable(task) and bool(((task < 0) | (task >= c.num_tasks)).any()))
        ):
            raise InputError(
                f"task must be {batch} (or 1) indices 0..{c.num_tasks - 1} into {tasks} (this DiT has "
                f"{c.num_tasks} task tokens); got {task.tolist()}"
            )
        return timestep.reshape(-1).expand(batch), task.long().expand(batch)

    # ----- checkpoints -----

    @classmethod
    def from_preset(cls, name: str) -> UniFormDiT:
        """A freshly initialised model of preset ``name`` ("xl" or "tiny")."""
        if name not in PRESETS:
            raise InputError(f"unknown DiT preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(PRESETS[name])

    def save(self, path: str | os.PathLike) -> None:
        """Write one safetensors file holding the weights and, in its metadata, the config."""
        save_component(self, path, CHECKPOINT_KIND, self.config.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu", dtype: torch.dtype = torch.float32) -> UniFormDiT:
        """Rebuild the model a :meth:`save` file describes (eval mode); CheckpointError if the file does not fit."""
        config = UniFormConfig.from_dict(read_component_config(path, CHECKPOINT_KIND))
        with empty_init():
            model = cls(config)
        model = model.to(dtype=dtype).to_empty(device=device)
        load_matching(model, load_state_dict_file(path), f"DiT checkpoint {os.fspath(path)!r}")
        return model.eval()
