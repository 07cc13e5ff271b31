"""Distribution metrics on features: Frechet distance (FAD, FD, FVD), polynomial-kernel MMD (KID, KVD), and the
classifier-based KL and Inception Score, as audioldm_eval and MM-Diffusion compute them.

The feature networks (VGGish for FAD, PANNs CNN14 for FD/KL/IS, I3D for FVD/KVD) need weight files that cannot be
shipped or downloaded, so :func:`load_feature_extractor` takes a user-supplied path and says where each file comes
from. Any object following :class:`FeatureExtractor` can be plugged in instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import CheckpointError, InputError


def _features(x, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise InputError(f"{name} must be a feature matrix (N, D) with N >= 2; got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return a


def _same_dim(a: np.ndarray, b: np.ndarray):
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feats_a and feats_b must have the same width D; got {a.shape[1]} and {b.shape[1]}")


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (tiny negatives clipped)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D):
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances, as pytorch-fid computes FID.

    ``tr((S_a S_b)^(1/2))`` is the sum of the square roots of the eigenvalues of ``S_a^(1/2) S_b S_a^(1/2)``, a
    symmetric PSD matrix, which avoids scipy's non-symmetric ``sqrtm`` and its complex round-off."""
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    _same_dim(a, b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(s_a)
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    tr_sqrt = np.sqrt(np.clip(cross, 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)


def kernel_distance(feats_a, feats_b, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> float:
    """Unbiased squared MMD between two feature sets (N, D) and (M, D) with the polynomial kernel
    ``k(x, y) = (gamma <x, y> + coef0) ** degree`` (``gamma`` defaults to 1 / D), as KID and KVD compute it on the
    whole sets (no subset averaging). Can be slightly negative when the sets come from the same distribution."""
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    _same_dim(a, b)
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    m, n = a.shape[0], b.shape[0]
    k_aa = (gamma * a @ a.T + coef0) ** degree
    k_bb = (gamma * b @ b.T + coef0) ** degree
    k_ab = (gamma * a @ b.T + coef0) ** degree
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


def _logits(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().cpu().double()
    if t.ndim != 2 or t.shape[0] < 1:
        raise InputError(f"{name} must be class logits (N, classes); got shape {tuple(t.shape)}")
    return t


def kl_divergence(logits_gen, logits_ref, variant: str = "softmax") -> float:
    """Mean KL(ref || gen) over paired clips from classifier logits (N, classes), as audioldm_eval's KL:
    ``sum kl_div(log(p_gen + 1e-6), p_ref) / N`` with ``p = softmax`` (AudioGen's form) or ``sigmoid``."""
    gen, ref = _logits(logits_gen, "logits_gen"), _logits(logits_ref, "logits_ref")
    if gen.shape != ref.shape:
        raise InputError(f"KL pairs generated and reference clips; shapes differ: {gen.shape} vs {ref.shape}")
    if variant not in ("softmax", "sigmoid"):
        raise InputError(f"variant must be 'softmax' or 'sigmoid'; got {variant!r}")

    def prob(x: torch.Tensor) -> torch.Tensor:
        return x.softmax(dim=1) if variant == "softmax" else x.sigmoid()

    kl = torch.nn.functional.kl_div((prob(gen) + 1e-6).log(), prob(ref), reduction="sum")
    return float(kl / len(gen))


def inception_score(logits, splits: int = 10, shuffle_seed: int | None = 2020) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) from classifier logits (N, classes), as audioldm_eval computes
    it: rows shuffled with ``numpy.random.RandomState(shuffle_seed)`` (None keeps the order), then per split
    ``exp(mean_i KL(p_i || mean p))``."""
    p_logits = _logits(logits, "logits")
    n = len(p_logits)
    if not 1 <= splits <= n:
        raise InputError(f"splits must be between 1 and the number of clips ({n}); got {splits!r}")
    if shuffle_seed is not None:
        p_logits = p_logits[np.random.RandomState(shuffle_seed).permutation(n)]
    p, log_p = p_logits.softmax(dim=1), p_logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        chunk = slice(i * n // splits, (i + 1) * n // splits)
        q = p[chunk].mean(dim=0, keepdim=True)
        scores.append(float((p[chunk] * (log_p[chunk] - q.log())).sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps a batch of clips to feature rows (K, dim): one per clip (I3D) or one per fixed-length example, pooled
    over clips (VGGish: K = B x whole 0.96 s examples, as FAD does). Audio extractors take waveforms (B, N) float
    at their ``sample_rate``; video extractors take frames (B, T, H, W, 3) float in [0, 1]."""

    name: str
    dim: int

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (K, dim)
        ...


@dataclass(frozen=True)
class _Weights:
    metric: str
    file: str
    source: str


WEIGHTS = {
    "vggish": _Weights(
        "FAD",
        "vggish-10086976.pth",
        "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth "
        "(torchvggish; audioldm_eval uses it without PCA, before the last ReLU)",
    ),
    "panns": _Weights(
        "FD / KL / IS (audio)",
        "Cnn14_16k_mAP=0.438.pth",
        "https://zenodo.org/record/3987831 (PANNs CNN14 at 16 kHz, as audioldm_eval uses)",
    ),
    "i3d": _Weights(
        "FVD / KVD",
        "i3d_pretrained_400.pt",
        "the I3D Kinetics-400 file used by MM-Diffusion's and TATS's FVD code (Google Drive id "
        "1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT)",
    ),
}


def load_feature_extractor(kind: str, weights_path=None) -> FeatureExtractor:
    """The ``kind`` ("vggish", "panns" or "i3d") feature network with the weights at ``weights_path``.

    Raises CheckpointError naming the file and where to get it when the path is not given or does not exist, or
    when the file does not fit. The networks: :mod:`~uniform_core.eval.vggish` (FAD), :mod:`~uniform_core.eval.panns`
    (FD; its ``logits`` for KL and IS) and :mod:`~uniform_core.eval.i3d` (FVD, KVD).
    """
    if kind not in WEIGHTS:
        raise InputError(f"feature extractor kind must be one of {', '.join(WEIGHTS)}; got {kind!r}")
    w = WEIGHTS[kind]
    if weights_path is None:
        raise CheckpointError(
            f"{w.metric} needs the {kind} weights {w.file}, which cannot be downloaded here; get it from {w.source} "
            f"and pass its path as weights_path"
        )
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{kind} weights file {str(path)!r} does not exist; expected {w.file} from {w.source}")
    from ..checkpoint import load_matching, load_state_dict_file
    from .i3d import I3D
    from .panns import Cnn14
    from .vggish import VGGish

    state = load_state_dict_file(path)
    model = {"vggish": VGGish, "panns": Cnn14, "i3d": I3D}[kind]()
    # I3D files saved before BatchNorm counted its batches lack these buffers; they do not affect eval outputs.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.zeros_like(value))
    load_matching(model, state, f"{kind} weights {str(path)!r}")
    return model.eval()
