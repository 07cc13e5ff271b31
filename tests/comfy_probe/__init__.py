"""A test-only ComfyUI node, linked into a test server by ``comfy_host.Server(probe=True)``.

It reports what ComfyUI's model management holds when it runs, plus a digest of a graph's frames and sound (to
compare two runs exactly). It is a node of the graph under test, not a prompt of its own: ComfyUI drops the cached
outputs of nodes missing from a prompt (and with them the models they hold), so a prompt of its own would change what
it looks at.
"""

import hashlib

import comfy.model_management


class UniFormTestProbe:
    CATEGORY = "testing"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE",),
                "audio": ("AUDIO",),
                "nonce": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),  # a new value runs it again
            },
            "optional": {"also": ("IMAGE",)},  # another branch that must have run first
        }

    def run(self, frames, audio, nonce, also=None):
        digest = hashlib.sha256()
        for images in frames:
            digest.update(images.contiguous().numpy().tobytes())
        for sound in audio:
            digest.update(sound["waveform"].contiguous().numpy().tobytes())
        models = []
        for loaded in comfy.model_management.current_loaded_models:
            patcher = loaded.model
            if patcher is not None:
                models.append(
                    {
                        "class": type(patcher.model).__name__,
                        "size": patcher.model_size(),
                        "loaded_size": patcher.loaded_size(),
                        "device": str(loaded.device),
                        "patcher": str(id(patcher)),
                    }
                )
        return {"ui": {"digest": [digest.hexdigest()], "models": models}}


NODE_CLASS_MAPPINGS = {"UniFormTestProbe": UniFormTestProbe}
