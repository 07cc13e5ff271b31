"""Every shipped workflow must load and validate against the node definitions, so none of them rots.

UI format (workflows/*.json, what users drag into the canvas): node types, input names and types, widget value
counts and values, links. API format (workflows/api/*.json, what /prompt takes): the checks ComfyUI's
``validate_inputs`` does (required inputs, combo membership, min/max, link targets and types). A UI workflow and
its API twin must describe the same graph.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path

import av
import pytest

UI_DIR = Path(__file__).resolve().parents[1] / "workflows"
API_DIR = UI_DIR / "api"
UI_FILES = sorted(UI_DIR.glob("*.json"))
API_FILES = sorted(API_DIR.glob("*.json"))

FILE = "FILE"  # a combo over the files in ComfyUI's input folder: any file name is acceptable here
CONTROL = "control_after_generate"
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD = "upload"  # UI-only widget values that upload combos add (the upload button, the audio player)
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SAMPLING_NODES = {"UniFormSampler", "UniFormLongSampler", "UniFormExtend"}

# The native nodes the workflows may use, as ComfyUI defines them (comfy_extras/nodes_video.py, nodes_audio.py),
# in INPUT_TYPES form plus their outputs and UI-only widget extras. test_comfy_server.py checks them against a
# real server's /object_info.
NATIVE_NODES = {
    "LoadVideo": {"required": {"file": (FILE, {})}, "outputs": ["VIDEO"], "extras": {"file": [UPLOAD]}},
    "SaveVideo": {
        "required": {
            "video": ("VIDEO", {}),
            "filename_prefix": ("STRING", {}),
            "format": (["auto", "mp4"], {}),
            "codec": (["auto", "h264"], {}),
        },
        "outputs": [],
    },
    "CreateVideo": {
        "required": {"images": ("IMAGE", {}), "fps": ("FLOAT", {"min": 1.0, "max": 120.0})},
        "optional": {"audio": ("AUDIO", {})},
        "outputs": ["VIDEO"],
    },
    "GetVideoComponents": {"required": {"video": ("VIDEO", {})}, "outputs": ["IMAGE", "AUDIO", "FLOAT"]},
    "LoadAudio": {"required": {"audio": (FILE, {})}, "outputs": ["AUDIO"], "extras": {"audio": [UPLOAD, UPLOAD]}},
    "SaveAudio": {
        "required": {"audio": ("AUDIO", {}), "filename_prefix": ("STRING", {})},
        "outputs": [],
        "trailing": [UPLOAD],
    },
    "PreviewAudio": {"required": {"audio": ("AUDIO", {})}, "outputs": [], "trailing": [UPLOAD]},
    "PreviewImage": {"required": {"images": ("IMAGE", {})}, "outputs": []},
}

# Frontend-only nodes: notes shown on the canvas, never sent to the server.
FRONTEND_NODES = {name: {"required": {"text": ("STRING", {})}, "outputs": []} for name in ("Note", "MarkdownNote")}


class Spec:
    """Inputs (name -> (type, options, required)), output types and the positional widget layout of a node."""

    def __init__(self, input_types: dict, outputs: list[str], extras: dict | None = None, trailing=()):
        self.inputs = {}
        for section, required in (("required", True), ("optional", False)):
            for name, info in input_types.get(section, {}).items():
                self.inputs[name] = (info[0], info[1] if len(info) > 1 else {}, required)
        self.outputs = list(outputs)
        self.widgets = []  # input names, CONTROL and UPLOAD markers, in widgets_values order
        for name, (kind, options, _) in self.inputs.items():
            if is_widget(kind):
                self.widgets.append(name)
                if kind == "INT" and (options.get(CONTROL) or name in ("seed", "noise_seed")):
                    self.widgets.append(CONTROL)
                self.widgets += (extras or {}).get(name, [])
        self.widgets += list(trailing)


def is_widget(kind) -> bool:
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind == FILE


class Specs:
    """Node specs by type: the pack's own classes and the listed native nodes."""

    def __init__(self, mappings: dict, native: dict):
        self.mappings, self.native = mappings, native

    def __call__(self, class_type: str) -> Spec:
        if class_type in self.mappings:
            cls = self.mappings[class_type]
            return Spec(cls.INPUT_TYPES(), list(cls.RETURN_TYPES))
        assert class_type in self.native, f"unknown node type {class_type!r}: neither UniForm nor a known native node"
        native = self.native[class_type]
        return Spec(native, native["outputs"], native.get("extras"), native.get("trailing", ()))


@pytest.fixture(scope="module")
def spec_of(pack) -> Specs:
    return Specs(pack.NODE_CLASS_MAPPINGS, {**NATIVE_NODES, **FRONTEND_NODES})


def check_value(where: str, name: str, kind, options: dict, value) -> None:
    """Raise AssertionError unless ``value`` is valid for a widget of ``kind`` (what ComfyUI's validation checks)."""
    if isinstance(kind, list):
        assert value in kind, f"{where}: {name}={value!r} is not one of {kind}"
    elif kind == FILE:
        assert isinstance(value, str) and value, f"{where}: {name} must name a file; got {value!r}"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {name} must be a string; got {value!r}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {name} must be a boolean; got {value!r}"
    else:
        number = int if kind == "INT" else (int, float)
        assert isinstance(value, number) and not isinstance(value, bool), f"{where}: {name}={value!r} is no {kind}"
        assert options.get("min", value) <= value <= options.get("max", value), (
            f"{where}: {name}={value!r} is outside [{options.get('min')}, {options.get('max')}]"
        )


def types_match(output_type: str, input_type) -> bool:
    """ComfyUI's link rule: equal types, ``*`` on either side, or a member of a comma-separated union."""
    if isinstance(input_type, list):
        return False
    if "*" in (output_type, input_type):
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


# ---- UI format ----------------------------------------------------------------------------------------------


def ui_widget_values(node: dict, spec: Spec) -> dict:
    """{input name: value} from the node's positional ``widgets_values`` (UI-only extras dropped)."""
    where = f"node {node['id']} ({node['type']})"
    values = node.get("widgets_values", [])
    assert len(values) == len(spec.widgets), (
        f"{where}: {len(values)} widget values for the {len(spec.widgets)} widgets {spec.widgets}"
    )
    named = {}
    for slot, value in zip(spec.widgets, values, strict=True):
        if slot == CONTROL:
            assert value in CONTROL_VALUES, f"{where}: control_after_generate {value!r} not in {CONTROL_VALUES}"
        elif slot != UPLOAD:
            kind, options, _ = spec.inputs[slot]
            check_value(where, slot, kind, options, value)
            named[slot] = value
    return named


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_matches_node_definitions(path, spec_of):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "node ids must be unique"
    assert wf["last_node_id"] >= max(nodes), "last_node_id is below a node id"
    assert wf["last_link_id"] >= max((link[0] for link in wf["links"]), default=0), "last_link_id is below a link id"
    for node in wf["nodes"]:
        spec, where = spec_of(node["type"]), f"{path.name} node {node['id']} ({node['type']})"
        assert node.get("mode", 0) == 0, f"{where} is muted or bypassed"
        ui_widget_values(node, spec)
        for slot in node.get("inputs", []):
            assert slot["name"] in spec.inputs, f"{where}: no input named {slot['name']!r}"
            kind, _, _ = spec.inputs[slot["name"]]
            if is_widget(kind):
                assert slot.get("widget", {}).get("name") == slot["name"], f"{where}: {slot['name']} is no widget"
            assert slot["type"] == ("COMBO" if isinstance(kind, list) else kind), f"{where}: {slot['name']} type"
        linked = {slot["name"] for slot in node.get("inputs", []) if slot.get("link") is not None}
        for name, (kind, _, required) in spec.inputs.items():
            if required and not is_widget(kind):
                assert name in linked, f"{where}: required input {name!r} is not connected"
        assert [o["type"] for o in node.get("outputs", [])] == spec.outputs, f"{where}: outputs"

    for link_id, src, src_slot, dst, dst_slot, link_type in wf["links"]:
        what = f"{path.name} link {link_id}"
        assert src in nodes and dst in nodes, f"{what}: unknown node"
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in (out.get("links") or []) and inp["link"] == link_id, f"{what}: not recorded on both ends"
        input_type = spec_of(nodes[dst]["type"]).inputs[inp["name"]][0]
        assert link_type == out["type"], f"{what}: link type {link_type} differs from the output's {out['type']}"
        assert types_match(out["type"], input_type), f"{what}: {out['type']} output into a {input_type} input"


# ---- API format ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_validates(path, spec_of):
    prompt = json.loads(path.read_text())
    assert prompt, "empty prompt"
    for node_id, node in prompt.items():
        spec, where = spec_of(node["class_type"]), f"{path.name} node {node_id} ({node['class_type']})"
        for name in node["inputs"]:
            assert name in spec.inputs, f"{where}: no input named {name!r}"
        for name, (kind, options, required) in spec.inputs.items():
            if name not in node["inputs"]:
                assert not required, f"{where}: required input {name!r} is missing"
                continue
            value = node["inputs"][name]
            if isinstance(value, list) and not isinstance(kind, list):
                src_id, index = value
                assert str(src_id) in prompt, f"{where}: {name} links to missing node {src_id}"
                outputs = spec_of(prompt[str(src_id)]["class_type"]).outputs
                assert 0 <= index < len(outputs), f"{where}: {name} links to output {index} of {len(outputs)}"
                assert types_match(outputs[index], kind), f"{where}: {outputs[index]} output into {name} ({kind})"
            else:
                check_value(where, name, kind, options, value)


def ui_to_api(wf: dict, spec_of: Specs) -> dict:
    """What the frontend's graphToPrompt makes of a UI workflow (enough of it for our graphs)."""
    links = {link[0]: link for link in wf["links"]}
    prompt = {}
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_NODES:
            continue
        inputs = ui_widget_values(node, spec_of(node["type"]))
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, src, src_slot, _, _, _ = links[slot["link"]]
                inputs[slot["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_has_an_identical_api_twin(path, spec_of):
    twin = API_DIR / path.name
    assert twin.is_file(), f"{path.name} has no API-format twin in workflows/api/"
    api = json.loads(twin.read_text())
    for node in api.values():
        node.pop("_meta", None)
    assert ui_to_api(json.loads(path.read_text()), spec_of) == api


def test_every_shipped_graph_is_checked():
    assert {p.name for p in UI_FILES} == {p.name for p in API_FILES}
    tasks = set()
    for path in API_FILES:
        for node in json.loads(path.read_text()).values():
            if node["class_type"] == "UniFormTaskLatent":
                tasks.add(node["inputs"]["task"])
    assert tasks == {"t2av", "a2v", "v2a"}, "the workflows must show every task"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_workflows_sample_the_embedded_bundle_as_its_bundle_json_says(path):
    """The Sampler's widgets are explicit, so the examples must carry uniform-tiny's own sampler and task's CFG, and
    every sampling node the measured condition guidance of its task (what -1, the widget's default, stands for)."""
    from uniform_core.bundle import DEFAULT_BUNDLE_DIR
    from uniform_core.diffusion.guidance import CONDITION_CFG, guidance_scales

    info = json.loads((DEFAULT_BUNDLE_DIR / "bundle.json").read_text())
    prompt = json.loads(path.read_text())
    (task,) = {n["inputs"]["task"] for n in prompt.values() if n["class_type"] == "UniFormTaskLatent"}
    (sampler,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "UniFormSampler"]
    assert (sampler["sampler"], sampler["cfg"]) == (info["sampler"], guidance_scales(info["cfg"])[task])
    sampling = [n["inputs"] for n in prompt.values() if n["class_type"] in SAMPLING_NODES]
    assert [node["cfg_condition"] for node in sampling] == [CONDITION_CFG[task]] * len(sampling)


# ---- what the frontend shows: schema id, the saved view, node boxes --------------------------------------------

# LiteGraph's measures in ComfyUI frontend 1.27.10 (LGraphNode.computeSize): a title bar above ``pos``, 20 px per
# slot row, 20 px per canvas widget and at least 50 px per DOM widget (multiline text, Markdown), each plus 4 px,
# then 8 + 6 px of padding.
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT, DOM_WIDGET_HEIGHT, WIDGET_GAP, PADDING = 30, 20, 20, 50, 4, 14
# Where the saved view puts nodes in a 1280x720 window, as headless Chromium measured it (test_comfy_frontend.py
# checks the real page): frontend 1.49 draws the canvas from the window's corner, 1.27.10 from (40, 40), right of
# its side bar and below its menu bar. Under both, the side bar, the top bars (workflow tabs, the Run bar) and, in
# the bottom-right corner, the minimap and the canvas buttons cover the canvas.
CANVAS_ORIGINS = ((0, 0), (40, 40))  # px, frontend 1.49 and 1.27.10
FREE_VIEW = (62, 90, 1276, 716)  # left, top, right, bottom of the window that no bar covers
COVERED_CORNER = (950, 450)  # the minimap and the canvas buttons cover the window right of x and below y
MIN_SCALE = 0.6  # LiteGraph draws no widget text below this zoom


def min_size(node: dict, spec: Spec) -> tuple[float, float]:
    """The smallest box the frontend lays this node out in: it grows a node whose saved size is smaller."""
    rows = max(len([s for s in node.get("inputs", []) if "widget" not in s]), len(spec.outputs), 1)
    height = rows * SLOT_HEIGHT
    for slot in spec.widgets:
        dom = slot in spec.inputs and spec.inputs[slot][1].get("multiline")
        height += (DOM_WIDGET_HEIGHT if dom or node["type"] in FRONTEND_NODES else WIDGET_HEIGHT) + WIDGET_GAP
    return (210 if spec.widgets else 140), height + (PADDING if spec.widgets else 6)


def node_box(node: dict, spec: Spec) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in canvas units, title bar included, at the size the frontend draws it."""
    width, height = (max(saved, least) for saved, least in zip(node["size"], min_size(node, spec), strict=True))
    x, y = node["pos"]
    return x, y - TITLE_HEIGHT, x + width, y + height


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_id_is_a_uuid(path):
    """The frontend's zod schema wants a UUID at "id"; anything else raises a toast and skips its link repair."""
    wf = json.loads(path.read_text())
    assert str(uuid.UUID(wf["id"])) == wf["id"], f"{path.name}: id {wf['id']!r} is not a lower-case UUID"


def test_ui_workflow_ids_differ():
    ids = [json.loads(p.read_text())["id"] for p in UI_FILES]
    assert len(set(ids)) == len(ids), "two workflows share an id: the frontend would treat them as one"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_every_node_is_inside_the_saved_view(path, spec_of):
    """``extra.ds`` (screen = origin + (canvas + offset) * scale) shows every node whole in a 1280x720 window of
    either frontend, clear of its bars and its minimap, at a zoom where widget text is drawn."""
    wf = json.loads(path.read_text())
    ds = wf["extra"]["ds"]
    scale, (dx, dy) = ds["scale"], ds["offset"]
    assert MIN_SCALE <= scale <= 1.5, f"{path.name}: zoom {scale} (widget text is hidden below {MIN_SCALE})"
    free_left, free_top, free_right, free_bottom = FREE_VIEW
    for node, (ox, oy) in itertools.product(wf["nodes"], CANVAS_ORIGINS):
        x0, y0, x1, y1 = node_box(node, spec_of(node["type"]))
        left, top = ox + (x0 + dx) * scale, oy + (y0 + dy) * scale
        right, bottom = ox + (x1 + dx) * scale, oy + (y1 + dy) * scale
        where = f"{path.name} node {node['id']} ({node['type']}), canvas from {(ox, oy)}"
        where += f": screen x {left:.0f}..{right:.0f}, y {top:.0f}..{bottom:.0f}"
        assert left >= free_left and top >= free_top, f"{where} is under the side bar or the top bars"
        assert right <= free_right and bottom <= free_bottom, f"{where} is off-screen"
        corner_x, corner_y = COVERED_CORNER
        assert right <= corner_x or bottom <= corner_y, f"{where} is under the minimap"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_no_two_nodes_overlap(path, spec_of):
    """Boxes as drawn (title bar, grown to fit their widgets) must not overlap: a note over Task Latent hid its
    height widget."""
    wf = json.loads(path.read_text())
    boxes = {n["id"]: (n["type"], node_box(n, spec_of(n["type"]))) for n in wf["nodes"]}
    for a, (type_a, (l1, t1, r1, b1)) in boxes.items():
        for b, (type_b, (l2, t2, r2, b2)) in boxes.items():
            if a < b:
                assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1, (
                    f"{path.name}: node {a} ({type_a}) and node {b} ({type_b}) overlap"
                )


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_the_note_leaves_task_latents_widgets_visible(path, spec_of):
    wf = json.loads(path.read_text())
    notes = [n for n in wf["nodes"] if n["type"] in FRONTEND_NODES]
    (latent,) = [n for n in wf["nodes"] if n["type"] == "UniFormTaskLatent"]
    spec = spec_of("UniFormTaskLatent")
    left, top, right, bottom = node_box(latent, spec)
    rows = max(len([s for s in latent["inputs"] if "widget" not in s]), len(spec.outputs))
    widgets_top = latent["pos"][1] + rows * SLOT_HEIGHT  # the widgets sit below the slot rows
    for note in notes:
        nl, nt, nr, nb = node_box(note, spec_of(note["type"]))
        assert nr <= left or right <= nl or nb <= widgets_top or bottom <= nt, (
            f"{path.name}: the note covers Task Latent"
        )


EXAMPLE_INPUTS = UI_DIR.parent / "example_inputs"
FILE_NODES = {"LoadVideo": "file", "LoadAudio": "audio"}  # native loaders that read ComfyUI's input folder


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_every_file_a_workflow_loads_ships_with_the_pack(path):
    """The pack copies example_inputs/ into ComfyUI's input folder (nodes/host.py), so "runs as loaded" holds for
    graphs that start from Load Video or Load Audio too."""
    ui = json.loads((UI_DIR / path.name).read_text())
    ui_files = {n["widgets_values"][0] for n in ui["nodes"] if n["type"] in FILE_NODES}
    for node in json.loads(path.read_text()).values():
        if node["class_type"] in FILE_NODES:
            name = node["inputs"][FILE_NODES[node["class_type"]]]
            assert name in ui_files, f"{path.name}: the UI workflow loads another file than {name!r}"
            assert (EXAMPLE_INPUTS / name).is_file(), f"{path.name} loads {name!r}, which example_inputs/ lacks"
            with av.open(str(EXAMPLE_INPUTS / name)) as c:
                assert c.streams.video and c.streams.audio, f"{name}: needs a video and an audio stream"
                assert len(list(c.decode(video=0))) >= 17, f"{name}: shorter than one second"
