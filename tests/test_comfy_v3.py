"""The node API the pack uses in each ComfyUI: the V3 schema (``comfy_entrypoint``) where the server has it, the V1
classes where it does not, and the same nodes either way, so saved workflows load in both.

The server tests run in the real-server suite (``UNIFORM_COMFYUI_DIR``; see ``comfy_host.py``); that the workflows
run through whichever API was chosen is checked by test_comfy_server.py on the same server.
"""

from __future__ import annotations

from comfy_host import requires_comfyui

V3_SINCE = (0, 3, 48)  # the first ComfyUI release with comfy_api's io / ComfyExtension and comfy_entrypoint
V3_LOG = "nodes served through the V3 schema (comfy_api.v0_0_2)"
V1_LOG = "serving V1 node classes"
V3_ONLY_DEFAULTS = {"multiselect": False, "multiline": False}  # what V3 writes out even where V1 leaves it unset


def comfyui_version(server) -> tuple[int, ...]:
    version = server.get("/system_stats").json()["system"]["comfyui_version"]
    return tuple(int(part) for part in version.lstrip("v").split(".")[:3])


def expected_entry(node: type) -> dict:
    """What /object_info serves for a V1 node class (as ComfyUI's server builds it), in comparable form."""
    spec = node.INPUT_TYPES()
    return {
        "input": {
            section: {name: comparable(kind_and_options) for name, kind_and_options in spec.get(section, {}).items()}
            for section in ("required", "optional")
        },
        "input_order": {section: list(spec.get(section, {})) for section in ("required", "optional")},
        "hidden": dict(spec.get("hidden", {})),
        "output": list(node.RETURN_TYPES),
        "output_name": list(node.RETURN_NAMES),
        "output_is_list": list(getattr(node, "OUTPUT_IS_LIST", [False] * len(node.RETURN_TYPES))),
        "output_tooltips": list(node.OUTPUT_TOOLTIPS),
        "display_name": node.DISPLAY_NAME,
        "category": node.CATEGORY,
        "description": node.DESCRIPTION,
        "output_node": getattr(node, "OUTPUT_NODE", False),
    }


def served_entry(served: dict) -> dict:
    """An /object_info entry in the form of :func:`expected_entry`: a V3 combo ("COMBO", {"options": [...]})
    becomes the V1 list of choices, V3 hidden inputs ("PROMPT",) their V1 name, and options V3 writes with
    their default value (``multiline: false``) are left out."""
    inputs = served["input"]
    return {
        "input": {
            section: {name: comparable(tuple(spec), served=True) for name, spec in inputs.get(section, {}).items()}
            for section in ("required", "optional")
        },
        "input_order": {section: served["input_order"].get(section, []) for section in ("required", "optional")},
        "hidden": {
            name: value[0] if isinstance(value, list) else value for name, value in inputs.get("hidden", {}).items()
        },
        **{key: served[key] for key in ("output", "output_name", "output_is_list", "output_tooltips")},
        **{key: served[key] for key in ("display_name", "category", "description", "output_node")},
    }


def comparable(spec: tuple, served: bool = False) -> tuple:
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    if served and kind == "COMBO":
        kind = options.pop("options")
    if served:
        options = {k: v for k, v in options.items() if k not in V3_ONLY_DEFAULTS or v != V3_ONLY_DEFAULTS[k]}
    return (list(kind) if isinstance(kind, (list, tuple)) else kind, options)


@requires_comfyui
def test_the_pack_uses_the_node_api_of_this_comfyui(server):
    version, log = comfyui_version(server), server.log_text()
    if version >= V3_SINCE:
        assert V3_LOG in log and V1_LOG not in log, f"ComfyUI {version}: the V3 path was not taken:\n{log[-4000:]}"
    else:
        assert V1_LOG in log and V3_LOG not in log, f"ComfyUI {version}: the V1 path was not taken:\n{log[-4000:]}"


@requires_comfyui
def test_every_node_is_served_as_its_v1_class_defines_it(server, pack):
    """Ids, input names and order, kinds, defaults, ranges, tooltips and outputs: what saved workflows rely on."""
    info = server.get("/object_info").json()
    for node_id, node in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id in info, f"{node_id} is not served"
        assert served_entry(info[node_id]) == expected_entry(node), node_id


def test_outside_comfyui_the_pack_exports_its_v1_classes(pack):
    """No comfy_api here: ComfyUI would find the V1 mappings, and each entry is the node class tests call."""
    assert pack.comfy_entrypoint is None
    assert pack.NODE_CLASS_MAPPINGS and all(
        callable(getattr(cls, cls.FUNCTION)) for cls in pack.NODE_CLASS_MAPPINGS.values()
    )
