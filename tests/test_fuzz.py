"""Fuzz: seeded random bad values for every user-facing parameter of the CLI (in-process ``cli.main``), the pipeline
and the nodes. Each call either runs (tiny sizes, one step) or raises a UniFormError; anything else (a traceback
from deep inside torch, PyAV or the OS) fails the test, listed with the call that raised it."""

import math
import random
import time

import numpy as np
import pytest
import torch

from uniform_core import cli, media
from uniform_core.bundle import save_bundle
from uniform_core.errors import UniFormError
from uniform_core.pipeline import UniFormPipeline, encode_audio, encode_video, make_task_latent, sample

CALLS_PER_TARGET = 70  # x 3 targets: at least 200 bad values
TIME_LIMIT_S = 120  # the whole fuzz; about 40 s on an idle 2-core CPU

NUMBERS = [math.nan, math.inf, -math.inf, 1e30, -1e30, -1, 0, 2**64, 2**70, -(2**63), 0.5, 1e-300, 17, 1000001]
TYPES = [None, [], {}, (), object(), b"1", 1j, "1", True, np.float64("nan"), np.int64(-5), torch.zeros(2)]
STRINGS = ["", " ", "\x00", "\ud800", "a\udcffb", "../../etc/passwd", "/", "x" * 5000, "\n\t", "NaN", "-1", "1e309"]
STRINGS += ["0x10", "inf", "🎵 ♪", "a\x00b.mp4", "con.mp4", "x.wav", "~/nowhere/x.mp4"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, bundle):
    folder = tmp_path_factory.mktemp("fuzz-inputs")
    clip = folder / "clip.mp4"
    media.write_mp4(clip, torch.rand(17, 32, 32, 3), 17, media.AudioClip(0.1 * torch.randn(1, 16000), 16000))
    (folder / "text.mp4").write_text("not a video")
    (folder / "empty.mp4").write_bytes(b"")
    bundle_dir = save_bundle(bundle, folder / "bundle")
    paths = [clip, folder / "text.mp4", folder / "empty.mp4", folder / "missing.mp4", folder, bundle_dir]
    return {"clip": clip, "bundle": bundle_dir, "paths": [str(p) for p in paths]}


def _bad(rng: random.Random, files) -> object:
    pool = rng.choice([NUMBERS, TYPES, STRINGS, files["paths"]])
    return rng.choice(pool)


def _tensors(rng: random.Random):
    """Frames / waveforms of the wrong shape, dtype or values."""
    shape = rng.choice([(17, 32, 32, 3), (17, 32, 32), (0, 32, 32, 3), (17, 32, 32, 4), (16000,), (2, 16000), (1,)])
    t = torch.rand(shape) if rng.random() < 0.7 else torch.randint(0, 255, shape)
    kind = rng.choice(["nan", "inf", "huge", "negative", "int64", "uint8", "plain"])
    if kind in ("nan", "inf") and t.numel() and t.is_floating_point():
        t.view(-1)[0] = math.nan if kind == "nan" else math.inf
    changed = {"huge": t.float() * 1e6, "negative": -t.float(), "int64": t.long(), "uint8": t.to(torch.uint8)}
    return changed.get(kind, t)


class Fuzz:
    def __init__(self):
        self.calls, self.ran, self.refused, self.leaks = 0, 0, 0, []

    def call(self, what: str, fn):
        self.calls += 1
        try:
            fn()
            self.ran += 1
        except UniFormError:
            self.refused += 1
        except Exception as e:  # noqa: BLE001 - collecting every other kind is the point of the test
            self.leaks.append(f"{what}: {type(e).__name__}: {e}"[:300])


@pytest.fixture(scope="module")
def fuzz():
    start, state = time.monotonic(), Fuzz()
    yield state
    assert time.monotonic() - start < TIME_LIMIT_S
    assert state.ran > 10 and state.refused > 100, "the values must both pass (and run) and be refused"


def test_cli_generate_flags(fuzz, files, pipe, monkeypatch, tmp_path, capsys):
    # The CLI's own checks are under test; a run that passes them uses the already-loaded tiny pipeline.
    monkeypatch.setattr(UniFormPipeline, "from_bundle", classmethod(lambda cls, *a, **k: pipe))
    monkeypatch.chdir(tmp_path)  # relative --out names land here
    rng = random.Random(1)
    flags = ["--task", "--prompt", "--negative-prompt", "--video", "--audio", "--out", "--bundle", "--steps"]
    flags += ["--cfg", "--seed", "--sampler", "--duration", "--height", "--width", "--batch", "--device"]
    flags += ["--precision"]
    for i in range(CALLS_PER_TARGET):
        flag, value = rng.choice(flags), _bad(rng, files)
        args = {"--task": "t2av", "--prompt": "a red ball", "--out": str(tmp_path / f"{i}.mp4"), "--steps": "1"}
        args |= {"--duration": "1", "--height": "32", "--width": "32", flag: str(value)}
        if flag in ("--video", "--audio"):
            args["--task"] = "v2a" if flag == "--video" else "a2v"
        argv = ["generate"] + [x for kv in args.items() for x in kv]
        fuzz.call(f"cli {flag}={value!r}", lambda argv=argv: cli.main(argv))
    capsys.readouterr()
    assert fuzz.calls >= CALLS_PER_TARGET and not fuzz.leaks, "\n".join(fuzz.leaks)


def test_pipeline_and_stage_arguments(fuzz, files, pipe, bundle, tmp_path):
    rng = random.Random(2)
    base = dict(task="t2av", prompt="a red ball", steps=1, duration=1, height=32, width=32)
    params = ["task", "prompt", "video", "audio", "duration", "seed", "steps", "cfg", "sampler", "negative_prompt"]
    params += ["batch_size", "height", "width"]
    latent = make_task_latent("t2av", duration=1, height=32, width=32)
    result = pipe.generate(**base)
    start = fuzz.calls
    for i in range(CALLS_PER_TARGET):
        value = _bad(rng, files)
        what = rng.choice(["generate", "encode_video", "encode_audio", "sample", "save"])
        if what == "generate":
            name = rng.choice(params)
            kwargs = (
                base
                | {name: value}
                | ({"task": "v2a"} if name == "video" else {"task": "a2v"} if name == "audio" else {})
            )
            fuzz.call(f"generate {name}={value!r}", lambda kw=kwargs: pipe.generate(**kw))
        elif what == "encode_video":
            frames, fps = (_tensors(rng), 17) if rng.random() < 0.5 else (torch.rand(17, 32, 32, 3), value)
            fuzz.call(f"encode_video fps={fps!r}", lambda f=frames, r=fps: encode_video(bundle.video_vae, f, r))
        elif what == "encode_audio":
            wave, rate = (_tensors(rng), 16000) if rng.random() < 0.5 else (torch.zeros(1, 16000), value)
            fuzz.call(f"encode_audio rate={rate!r}", lambda w=wave, r=rate: encode_audio(bundle.audio_codec, w, r))
        elif what == "sample":
            name = rng.choice(["seed", "steps", "cfg", "sampler", "batch_size", "text", "latent"])
            kwargs = dict(latent=latent, steps=1, sampler="ddim") | {name: value}
            fuzz.call(f"sample {name}={value!r}", lambda kw=kwargs: sample(bundle.dit, **kw))
        else:
            name = rng.choice(["path", "index"])
            kwargs = dict(path=tmp_path / f"{i}.mp4", index=0) | {name: value}
            fuzz.call(f"save {name}={value!r}", lambda kw=kwargs: result.save(**kw))
    assert fuzz.calls - start >= CALLS_PER_TARGET and not fuzz.leaks, "\n".join(fuzz.leaks)


def test_node_inputs(fuzz, files, pack, bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIFORM_OUTPUT_DIR", str(tmp_path))
    nodes = {k: v() for k, v in pack.NODE_CLASS_MAPPINGS.items()}
    managed = __import__(f"{pack.__name__}.nodes.managed", fromlist=["prepare"])
    parts = {
        name: managed.prepare(getattr(bundle, attr), name, "fp32", "auto")
        for name, attr in [
            ("dit", "dit"),
            ("video_vae", "video_vae"),
            ("audio_vae", "audio_codec"),
            ("text_encoder", "text_encoder"),
        ]
    }
    (text,) = nodes["UniFormTextEncode"].run(text_encoder=parts["text_encoder"], prompt="a ball", negative_prompt="")
    (latent,) = nodes["UniFormTaskLatent"].run(task="t2av", duration=1, width=32, height=32)
    frames, audio = torch.rand(17, 32, 32, 3), {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}
    valid = {
        "UniFormTaskLatent": dict(task="t2av", duration=1, width=32, height=32),
        "UniFormSampler": dict(
            dit=parts["dit"], latent=latent, seed=0, steps=1, cfg=1.0, sampler="ddim", batch_size=1, text=text
        ),
        "UniFormTextEncode": dict(text_encoder=parts["text_encoder"], prompt="a ball", negative_prompt=""),
        "UniFormVideoEncode": dict(
            video_vae=parts["video_vae"], fps=17.0, duration=0, width=0, height=0, images=frames
        ),
        "UniFormAudioEncode": dict(audio_vae=parts["audio_vae"], audio=audio, duration=0),
        "UniFormVideoDecode": dict(video_vae=parts["video_vae"], latent=latent),
        "UniFormAudioDecode": dict(audio_vae=parts["audio_vae"], latent=latent),
        "UniFormSaveAV": dict(frames=frames, fps=17.0, filename_prefix="fuzz/x", audio=audio),
        "UniFormExampleClip": dict(seed=0, duration=1, size=64, objects=1),
    }
    rng = random.Random(3)
    start = fuzz.calls
    for _ in range(CALLS_PER_TARGET):
        node = rng.choice(sorted(valid))
        name = rng.choice(sorted(valid[node]))
        value = _tensors(rng) if name in ("images", "frames") and rng.random() < 0.5 else _bad(rng, files)
        if name == "audio" and rng.random() < 0.5:
            value = {"waveform": _tensors(rng), "sample_rate": _bad(rng, files)}
        inputs = valid[node] | {name: value}
        fuzz.call(f"{node} {name}={value!r}"[:200], lambda n=node, kw=inputs: nodes[n].run(**kw))
    assert fuzz.calls - start >= CALLS_PER_TARGET and not fuzz.leaks, "\n".join(fuzz.leaks)
    assert fuzz.calls >= 200
