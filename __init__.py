"""ComfyUI entry point of the UniForm node pack: ``comfy_entrypoint`` (V3 schema) on a ComfyUI that has it, else the
V1 node mappings, from nodes/."""

import os
import sys

# ComfyUI-Manager installs requirements.txt only, so the library beside this file is made importable here.
_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)  # appended: this folder also holds `nodes`, which must never shadow ComfyUI's

if __package__:  # loaded by ComfyUI (or the tests) as the pack's package
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy_entrypoint

    if comfy_entrypoint is not None:  # ComfyUI reads the V1 mappings first whenever they are set
        NODE_CLASS_MAPPINGS = NODE_DISPLAY_NAME_MAPPINGS = None
else:  # imported by path, e.g. pytest collecting a checkout whose folder name is no identifier: nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy_entrypoint = {}, {}, None

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "comfy_entrypoint"]
