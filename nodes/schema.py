"""The nodes in ComfyUI's V3 schema: each V1 class of this package, the one definition of a node, served as an
``io.ComfyNode`` through ``comfy_entrypoint``.

The node classes stay plain V1 classes (INPUT_TYPES / RETURN_TYPES / FUNCTION) that any ComfyUI can load and that
tests and scripts call directly. On a server with the V3 schema (ComfyUI 0.3.48 and newer) each is translated here
into a Schema with the same node id, input names, kinds, defaults, ranges and tooltips, the same outputs and output
tooltips, and an ``execute`` that runs the V1 class, so saved workflows load unchanged. ``api`` is the pinned
``comfy_api`` module that :func:`host.v3_api` hands over; nothing here imports ComfyUI.
"""

from __future__ import annotations

import logging
from types import ModuleType

from .host import COMFY_API_VERSION

logger = logging.getLogger(__name__)

_IO_TYPES = {  # V1 type name -> the io class of ComfyUI's own type; any other name is an io.Custom type
    "INT": "Int",
    "FLOAT": "Float",
    "STRING": "String",
    "BOOLEAN": "Boolean",
    "IMAGE": "Image",
    "AUDIO": "Audio",
    "VIDEO": "Video",
}


def entrypoint(nodes: list[type], api: ModuleType | None):
    """ComfyUI's ``comfy_entrypoint`` serving ``nodes`` as V3 nodes, or None without the V3 ``api``."""
    if api is None:
        return None
    served = [v3_node(node, api.io) for node in nodes]

    class UniFormExtension(api.ComfyExtension):
        async def get_node_list(self) -> list[type]:
            return served

    async def comfy_entrypoint() -> UniFormExtension:
        logger.info("UniForm: %d nodes served through the V3 schema (comfy_api.%s)", len(served), COMFY_API_VERSION)
        return UniFormExtension()

    return comfy_entrypoint


def v3_node(node: type, io: ModuleType) -> type:
    """The ``io.ComfyNode`` of the V1 class ``node``: its schema is built from ``node.INPUT_TYPES()`` each time
    ComfyUI asks (model lists stay current), and ``execute`` calls ``node``'s FUNCTION."""

    def define_schema(cls):
        spec = node.INPUT_TYPES()
        inputs = [
            _input(io, name, kind_and_options, optional=section == "optional")
            for section in ("required", "optional")
            for name, kind_and_options in spec.get(section, {}).items()
        ]
        outputs = [
            _io_type(io, kind).Output(display_name=name, tooltip=tooltip, is_output_list=is_list)
            for kind, name, tooltip, is_list in zip(
                node.RETURN_TYPES,
                node.RETURN_NAMES,
                node.OUTPUT_TOOLTIPS,
                getattr(node, "OUTPUT_IS_LIST", (False,) * len(node.RETURN_TYPES)),
                strict=True,
            )
        ]
        return io.Schema(
            node_id=node.__name__,
            display_name=node.DISPLAY_NAME,
            category=node.CATEGORY,
            description=node.DESCRIPTION,
            inputs=inputs,
            outputs=outputs,
            hidden=[io.Hidden(value) for value in spec.get("hidden", {}).values()],
            is_output_node=getattr(node, "OUTPUT_NODE", False),
        )

    def execute(cls, **inputs):
        hidden_inputs = node.INPUT_TYPES().get("hidden", {})  # e.g. {"prompt": "PROMPT"}: ComfyUI's values by name
        hidden = {name: getattr(cls.hidden, io.Hidden(value).name) for name, value in hidden_inputs.items()}
        result = getattr(node(), node.FUNCTION)(**inputs, **hidden)
        if isinstance(result, dict):  # {"ui": ..., "result": ...} of an output node
            return io.NodeOutput(*result["result"], ui=result["ui"])
        return io.NodeOutput(*result)

    attributes = {
        "define_schema": classmethod(define_schema),
        "execute": classmethod(execute),
        "DEFINITION": node,
        "__module__": node.__module__,
        "__doc__": node.__doc__,
    }
    return type(node.__name__, (io.ComfyNode,), attributes)


def _input(io: ModuleType, name: str, spec: tuple, optional: bool):
    """A V3 input from a V1 ``(kind, options)`` pair; V1 option names are the V3 parameter names, so an option
    the V3 class does not take fails here, at load time, instead of being dropped."""
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    if isinstance(kind, (list, tuple)):
        return io.Combo.Input(name, options=list(kind), optional=optional, **options)
    return _io_type(io, kind).Input(name, optional=optional, **options)


def _io_type(io: ModuleType, kind: str):
    return getattr(io, _IO_TYPES[kind]) if kind in _IO_TYPES else io.Custom(kind)
