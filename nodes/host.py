"""What the nodes need from ComfyUI: model folders, the output folder, progress, interruption, devices, VIDEO.

This is the only module of the pack that imports ComfyUI (``folder_paths``, ``comfy.*``, ``comfy_api``), and it
does so lazily. Outside ComfyUI every service falls back to a plain equivalent, so each node stays a class that
tests and scripts can call directly:

- node API: ComfyUI's V3 schema at the pinned ``comfy_api`` version where the server has it, else none (V1 classes)

- models: ``$UNIFORM_MODELS_DIR`` (default ``./models/uniform``); outputs: ``$UNIFORM_OUTPUT_DIR`` (``./outputs``)
- progress: a no-op; interruption: never; device: CPU; VIDEO: a small object with ``get_components()``
- example inputs (``example_inputs/``): copied into ComfyUI's input folder at import; outside it, left where they are.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType, SimpleNamespace

import av
import torch

from uniform_core.atomic import write_bytes
from uniform_core.bundle import COMPONENT_FILES
from uniform_core.checks import is_inside
from uniform_core.errors import InputError
from uniform_core.precision import PRECISIONS as POLICY_PRECISIONS
from uniform_core.precision import part_dtype, part_name

logger = logging.getLogger(__name__)

FOLDER = "uniform"  # models/uniform, the pack's model folder in ComfyUI
EMBEDDED_BUNDLE = "uniform-tiny (embedded)"
PRECISIONS = list(POLICY_PRECISIONS)  # lists: ComfyUI validates combos only when they are lists
_MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
EXAMPLE_INPUTS = Path(__file__).resolve().parents[1] / "example_inputs"  # what the example workflows load
BUNDLE_FILES = (*COMPONENT_FILES.values(), "bundle.json")  # every file load_bundle reads


def _comfy(name: str) -> ModuleType | None:
    """The ComfyUI module ``name``, or None when the pack runs outside ComfyUI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# ---- node API -------------------------------------------------------------------------------------------

COMFY_API_VERSION = "v0_0_2"  # the comfy_api version the V3 nodes are built against (nodes/schema.py)


def v3_api() -> ModuleType | None:
    """ComfyUI's V3 node API (``io``, ``ComfyExtension``) at the pinned version, or None: outside ComfyUI and on
    ComfyUI before 0.3.48, whose ``comfy_api`` has no ``io`` (0.3.47 has no ``v0_0_2`` at all)."""
    api = _comfy(f"comfy_api.{COMFY_API_VERSION}")
    if api is not None and all(hasattr(api, name) for name in ("io", "ComfyExtension")):
        return api
    if _comfy("folder_paths") is not None:
        logger.info("UniForm: no V3 schema (comfy_api.%s) in this ComfyUI; serving V1 node classes", COMFY_API_VERSION)
    return None


# ---- model files ------------------------------------------------------------------------------------------


def register_model_folder() -> None:
    """Make ComfyUI list weight files in ``models/uniform`` (and paths added for ``uniform`` in
    extra_model_paths.yaml; a new key would otherwise list every file).

    Runs at pack import, before any listing: folder_paths caches listings per directory mtime, so extensions set
    later would be ignored until a file changes.
    """
    folder_paths = _comfy("folder_paths")
    if folder_paths is None:
        return
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER), is_default=True)
    paths, _ = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(folder_paths.supported_pt_extensions))


def model_dirs() -> list[str]:
    """Folders searched for UniForm model files, first one first."""
    folder_paths = _comfy("folder_paths")
    if folder_paths is not None and FOLDER in folder_paths.folder_names_and_paths:
        return list(folder_paths.get_folder_paths(FOLDER))
    return [os.environ.get("UNIFORM_MODELS_DIR", os.path.join(os.getcwd(), "models", FOLDER))]


def list_model_files() -> list[str]:
    """Weight files under the model folders, as paths relative to them (``sub/file.safetensors``); none whose real
    path leaves the folders (a symlink out is not offered)."""
    folder_paths = _comfy("folder_paths")
    if folder_paths is not None and FOLDER in folder_paths.folder_names_and_paths:
        listed = folder_paths.get_filename_list(FOLDER)
    else:
        listed = set()
        for root in model_dirs():
            for dirpath, _, files in os.walk(root, followlinks=True):
                listed.update(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/") for f in files)
    return sorted(f for f in listed if f.lower().endswith(_MODEL_EXTENSIONS) and _stays_inside(f))


def list_bundles() -> list[str]:
    """The embedded default first, then every folder under the model folders that holds a full bundle."""
    bundles = set()
    for f in list_model_files():
        folder, name = os.path.split(f)
        if folder and name == COMPONENT_FILES["dit"] and _is_bundle(folder):
            bundles.add(folder)
    return [EMBEDDED_BUNDLE, *sorted(bundles)]


def _stays_inside(name: str) -> bool:
    try:
        resolve_model(name)
    except InputError:
        return False
    return True


def _is_bundle(name: str) -> bool:
    try:
        folder = resolve_bundle(name)
    except InputError:
        return False
    return all(os.path.isfile(os.path.join(folder, f)) for f in COMPONENT_FILES.values())


def resolve_model(name: str, input_name: str = "model") -> str:
    """Real path of a file or folder listed by :func:`list_model_files` / :func:`list_bundles`.

    ``name`` must resolve (``..``, absolute paths and symlinks followed) to a path inside one of the model folders:
    a node input must not be a way to read any file the server can."""
    for root in model_dirs():
        path = os.path.join(root, name)
        if os.path.lexists(path):
            return _inside_model_dirs(path, name, input_name)
    raise InputError(
        f"{input_name} {name!r} was not found in the model folder {', '.join(model_dirs())}; put it there"
    )


def resolve_bundle(name: str, input_name: str = "bundle") -> str:
    """Real path of a bundle folder whose every file that exists (see :data:`BUNDLE_FILES`) stays inside the model
    folders too."""
    folder = resolve_model(name, input_name)
    for f in BUNDLE_FILES:
        if os.path.lexists(os.path.join(folder, f)):
            _inside_model_dirs(os.path.join(folder, f), f"{name}/{f}", input_name)
    return folder


def _inside_model_dirs(path: str, name: str, input_name: str) -> str:
    roots = model_dirs()
    real = os.path.realpath(path)
    if not any(is_inside(real, root) for root in roots):
        raise InputError(
            f"{input_name} {name!r} resolves to {real}, outside the model folder {', '.join(roots)}; "
            "put the file itself (not a link to elsewhere) there"
        )
    return real


# ---- example inputs ---------------------------------------------------------------------------------------


def provide_example_inputs() -> list[str]:
    """Copy the pack's ``example_inputs/`` into ComfyUI's input folder, where Load Video lists files, so the
    example workflows that load a file run as loaded. A file of the same name already there is left alone."""
    folder_paths = _comfy("folder_paths")
    if folder_paths is None or not EXAMPLE_INPUTS.is_dir():
        return []
    input_dir = folder_paths.get_input_directory()
    copied = []
    for source in sorted(EXAMPLE_INPUTS.iterdir()):
        target = os.path.join(input_dir, source.name)
        if source.is_file() and not os.path.lexists(target):
            try:
                write_bytes(target, source.read_bytes())
            except OSError as e:  # a read-only input folder must not stop the pack from loading
                logger.warning("UniForm: could not copy the example input %s to %s: %s", source.name, input_dir, e)
                continue
            copied.append(target)
    return copied


# ---- output files -----------------------------------------------------------------------------------------


def output_directory() -> str:
    folder_paths = _comfy("folder_paths")
    if folder_paths is not None:
        return folder_paths.get_output_directory()
    return os.environ.get("UNIFORM_OUTPUT_DIR", os.path.join(os.getcwd(), "outputs"))


@dataclass
class OutputFile:
    path: str  # full path of the new file
    filename: str  # its name inside ``subfolder``
    subfolder: str  # relative to the output directory, "" for the top


def next_output_file(prefix: str, extension: str, width: int = 0, height: int = 0) -> OutputFile:
    """A new ``<prefix>_00001_.<extension>`` in the output folder, counting up like ComfyUI's own save nodes."""
    out_dir = output_directory()
    folder_paths = _comfy("folder_paths")
    if folder_paths is not None:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir, width, height)
    else:
        subfolder, name = os.path.split(os.path.normpath(prefix))
        folder = os.path.join(out_dir, subfolder)
        if not is_inside(folder, out_dir):
            raise InputError(f"filename_prefix {prefix!r} points outside the output folder {out_dir}")
        pattern = re.compile(re.escape(name) + r"_(\d+)_")
        existing = os.listdir(folder) if os.path.isdir(folder) else []
        counter = max([int(m.group(1)) for f in existing if (m := pattern.match(f))], default=0) + 1
    os.makedirs(folder, exist_ok=True)
    filename = f"{name}_{counter:05}_.{extension}"
    return OutputFile(os.path.join(folder, filename), filename, subfolder)


def file_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> dict[str, str]:
    """ComfyUI's prompt and workflow as JSON tags for a saved file, as its own save nodes write them (so dropping
    the file on the canvas restores the graph); none with ``--disable-metadata``."""
    cli_args = _comfy("comfy.cli_args")
    if cli_args is not None and cli_args.args.disable_metadata:
        return {}
    tags = {key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()}
    if prompt is not None:
        tags["prompt"] = json.dumps(prompt)
    return tags


# ---- progress and interruption ----------------------------------------------------------------------------


def progress_reporter():
    """``progress(step, total)`` for the library's long loops, drawn as the node's progress bar in ComfyUI."""
    utils = _comfy("comfy.utils")
    if utils is None:
        return lambda step, total: None
    bar = None

    def progress(step: int, total: int) -> None:
        nonlocal bar
        bar = bar or utils.ProgressBar(total)
        bar.update_absolute(step, total)  # ComfyUI's hook also raises here when the user pressed Cancel

    return progress


def preview_shower():
    """``show(step, total, image)`` that draws ``image`` ((H, W, 3) uint8) as the node's progress preview, as
    ComfyUI's latent previewers send theirs; None outside ComfyUI or while its preview method is none."""
    cli_args, utils = _comfy("comfy.cli_args"), _comfy("comfy.utils")
    if cli_args is None or utils is None or cli_args.args.preview_method == cli_args.LatentPreviewMethod.NoPreviews:
        return None
    from PIL import Image  # a ComfyUI dependency, not the library's

    bar = None

    def show(step: int, total: int, image: torch.Tensor) -> None:
        nonlocal bar
        bar = bar or utils.ProgressBar(total)
        bar.update_absolute(step, total, ("JPEG", Image.fromarray(image.numpy()), cli_args.args.preview_size))

    return show


def check_interrupted() -> None:
    """Raise ComfyUI's own interrupt exception if the user pressed Cancel, so the run is recorded as interrupted
    (not failed) and the flag is reset for the next prompt. Never raises outside ComfyUI."""
    mm = _comfy("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def cancel_check():
    """``cancel() -> bool`` for the library's loops; ComfyUI's Cancel raises from inside it (see above)."""
    mm = _comfy("comfy.model_management")

    def cancel() -> bool:
        if mm is not None:
            mm.throw_exception_if_processing_interrupted()
        return False

    return cancel


# ---- devices, precision and ComfyUI's model management ------------------------------------------------------

# Which of ComfyUI's device choices each part follows (so --cpu-vae and the text encoder's device apply to ours).
_DEVICES = {
    "dit": ("get_torch_device", "unet_offload_device"),
    "video_vae": ("vae_device", "vae_offload_device"),
    "audio_codec": ("vae_device", "vae_offload_device"),
    "text_encoder": ("text_encoder_device", "text_encoder_offload_device"),
}


def load_device(part: str = "dit") -> torch.device:
    """Where ComfyUI runs a model of kind ``part`` (a key of ``_DEVICES``); the CPU outside ComfyUI."""
    mm = _comfy("comfy.model_management")
    return torch.device(getattr(mm, _DEVICES[part][0])()) if mm is not None else torch.device("cpu")


def choose_dtype(module: torch.nn.Module, precision: str, device: torch.device | None = None) -> torch.dtype:
    """The dtype of ``module`` on ``device`` (default: ComfyUI's torch device) by the library's one policy
    (``uniform_core.precision``), with ComfyUI's own judgement of whether the device runs bf16 well."""
    device = load_device() if device is None else device
    mm = _comfy("comfy.model_management")
    bf16_ok = mm.should_use_bf16(device) if mm is not None and device.type != "cpu" else None
    return part_dtype(part_name(module), precision, device, bf16_ok)


def model_patcher(module: torch.nn.Module, part: str, keep_on_device: bool = False):
    """ComfyUI's ModelPatcher for ``module`` on the devices ComfyUI picks for ``part``; None outside ComfyUI.

    ``keep_on_device`` makes the load device the offload device too. The plain ModelPatcher, not 0.4's dynamic
    CoreModelPatcher: that one streams weights of ComfyUI's own layer classes, which our modules do not use.
    """
    mm, patching = _comfy("comfy.model_management"), _comfy("comfy.model_patcher")
    if mm is None or patching is None:
        return None
    load, offload = (torch.device(getattr(mm, name)()) for name in _DEVICES[part])
    module.device = next(module.parameters()).device  # where the weights are now, not where ComfyUI would put them
    return patching.ModelPatcher(module, load_device=load, offload_device=load if keep_on_device else offload)


def load_models(patchers: list, memory_required: int = 0) -> None:
    """Load ``patchers``' modules onto their device the way ComfyUI loads its own: memory is freed first (other
    models unloaded as needed, by ComfyUI's rules for --lowvram/--novram/--highvram), then the weights move whole
    (``force_full_load``: ComfyUI streams parts of a model only for its own layer classes)."""
    mm = _comfy("comfy.model_management")
    mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)


def unload_model(patcher) -> None:
    """Unload one model to its offload device and drop it from ComfyUI's loaded models, leaving the others."""
    mm = _comfy("comfy.model_management")
    others = [loaded for loaded in mm.current_loaded_models if loaded.model is not patcher]
    mm.free_memory(1e30, patcher.load_device, keep_loaded=others)


# ---- native VIDEO -----------------------------------------------------------------------------------------


def make_video(frames: torch.Tensor, fps: float, audio: dict | None = None):
    """A VIDEO value for native nodes (SaveVideo, GetVideoComponents) from frames (T, H, W, 3) in [0, 1], their
    fps and an optional AUDIO dict; outside ComfyUI an object with the same ``get_components()``."""
    components = dict(images=frames, frame_rate=Fraction(fps).limit_denominator(1001), audio=audio)
    latest = _comfy("comfy_api.latest")
    if latest is not None:
        return latest.InputImpl.VideoFromComponents(latest.Types.VideoComponents(**components))
    impl, util = _comfy("comfy_api.input_impl"), _comfy("comfy_api.util")  # ComfyUI 0.3.31 to 0.3.47
    if impl is not None and util is not None:
        return impl.VideoFromComponents(util.VideoComponents(**components))
    return _PlainVideo(SimpleNamespace(metadata=None, **components))


def decoded_video(video, input_name: str = "video"):
    """``video`` decoded once (its frames, fps and sound), as a VIDEO value; a file that is no video (ComfyUI's
    Load Video accepts any file name) becomes an InputError naming the input, not PyAV's or an IndexError."""
    if not callable(getattr(video, "get_components", None)):
        raise InputError(f"{input_name} must be a VIDEO (e.g. from Load Video); got {type(video).__name__}")
    try:
        components = video.get_components()
    except (av.error.FFmpegError, IndexError, StopIteration, ValueError, OSError) as e:
        reason = str(e) or type(e).__name__
        raise InputError(
            f"{input_name} could not be read as a video ({reason}); load a video file such as an MP4"
        ) from e
    return _PlainVideo(components)


class _PlainVideo:
    def __init__(self, components: SimpleNamespace):
        self._components = components

    def get_components(self) -> SimpleNamespace:
        return self._components

    def get_dimensions(self) -> tuple[int, int]:
        return self._components.images.shape[2], self._components.images.shape[1]
