"""UniForm ComfyUI nodes, one module per stage; only nodes/host.py touches ComfyUI itself."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
