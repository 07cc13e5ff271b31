"""UniForm ComfyUI nodes, one module per stage; only nodes/host.py touches ComfyUI itself.

The node classes are V1 classes (what tests and scripts call); ``comfy_entrypoint`` serves the same classes in
ComfyUI's V3 schema (``schema.py``) where the server has it, and is None where it does not.
"""

from . import host

host.register_model_folder()  # before any node lists models/uniform
host.provide_example_inputs()  # the clip UniForm video file to sound loads

from . import decode, encode, evaluate, examples, latent, loaders, long, sample, save, schema  # noqa: E402

_NODES = [
    *loaders.NODES,
    *encode.NODES,
    *latent.NODES,
    *sample.NODES,
    *long.NODES,
    *decode.NODES,
    *save.NODES,
    *evaluate.NODES,
    *examples.NODES,
]

NODE_CLASS_MAPPINGS: dict[str, type] = {cls.__name__: cls for cls in _NODES}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {cls.__name__: cls.DISPLAY_NAME for cls in _NODES}
comfy_entrypoint = schema.entrypoint(_NODES, host.v3_api())
