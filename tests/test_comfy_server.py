"""End to end on a real ComfyUI server: the pack loads, every API workflow runs, Cancel and bad input are survived.

The server and its helpers are in ``comfy_host.py``; see there for what the tests need.
"""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
import wave

import av
import pytest
import requests
from comfy_host import (
    API_DIR,
    API_FILES,
    EMBEDDED_BUNDLE,
    LINK_NAME,
    MEDIA_EXTENSIONS,
    Server,
    assert_success,
    expected_seconds,
    load_prompt,
    load_test_module,
    messages,
    node_of,
    requires_comfyui,
)

pytestmark = requires_comfyui


# ---- tests --------------------------------------------------------------------------------------------------


def test_pack_imports_and_every_node_is_served(server, pack):
    failed = [line for line in server.log_text().splitlines() if "IMPORT FAILED" in line and LINK_NAME in line]
    assert not failed, "the pack failed to import:\n" + server.log_text()[-6000:]
    info = server.get("/object_info").json()
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id in info, f"{node_id} is not served"
        assert info[node_id]["display_name"] == cls.DISPLAY_NAME
        assert info[node_id]["output"] == list(cls.RETURN_TYPES)


def test_the_workflows_are_offered_as_templates(server):
    templates = server.get("/workflow_templates").json()
    assert sorted(templates.get(LINK_NAME, [])) == sorted(p.stem for p in API_FILES)


def test_the_workflows_run_on_the_embedded_default(server):
    if server.bundle != EMBEDDED_BUNDLE:
        pytest.skip("the embedded default uniform-tiny is not trained in this checkout; graphs ran on random weights")
    served = server.get("/object_info/UniFormLoadBundle").json()["UniFormLoadBundle"]
    assert EMBEDDED_BUNDLE in served_inputs(served)["bundle"][0]


DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # newer ComfyUI: a combo whose choice adds inputs (Save Video's format)


def served_inputs(served: dict) -> dict:
    """{name: (kind, options, required)} of an /object_info entry; V3 and dynamic combos become lists of choices."""
    inputs = {}
    for section in ("required", "optional"):
        for name, (kind, *options) in served["input"].get(section, {}).items():
            options = options[0] if options else {}
            if kind in ("COMBO", DYNAMIC_COMBO):
                kind = [o["key"] if isinstance(o, dict) else o for o in options.get("options", [])]
            inputs[name] = (kind, options, section == "required")
    return inputs


def test_native_node_definitions_used_by_the_workflow_checks_match_the_server(server):
    """test_workflows.py describes the native nodes by hand (as ComfyUI 0.3.64 defines them); the running server
    must accept every graph written against that description: the described outputs come first, every described
    input is served with the same kind (combos: the described choices are offered), and whatever the server adds
    beyond it is optional."""
    native = load_test_module("test_workflows").NATIVE_NODES
    info = server.get("/object_info").json()
    for name, spec in native.items():
        assert name in info, f"native node {name} is not served (missing dependency, e.g. torchaudio?)"
        served = served_inputs(info[name])
        assert info[name]["output"][: len(spec["outputs"])] == spec["outputs"], f"{name} outputs"
        described = {**spec.get("required", {}), **spec.get("optional", {})}
        for input_name, (kind, _) in described.items():
            assert input_name in served, f"{name} no longer has the input {input_name}"
            served_kind = served[input_name][0]
            if isinstance(kind, list):
                assert isinstance(served_kind, list) and set(kind) <= set(served_kind), f"{name}.{input_name}"
            elif kind == "FILE":
                assert isinstance(served_kind, list), f"{name}.{input_name} is no file combo"
            else:
                assert served_kind == kind, f"{name}.{input_name}: {served_kind} != {kind}"
        added = {n for n, (_, _, required) in served.items() if required and n not in described}
        assert not added, f"{name} has new required inputs {added}: graphs written for 0.3.64 would not validate"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs_and_writes_playable_media(server, uploaded_video, path):
    prompt = load_prompt(server, path, uploaded_video)
    workflow = json.loads((API_DIR.parent / path.name).read_text())
    entry = server.wait(server.queue(prompt, workflow))
    assert_success(entry)
    files = [f for out in entry["outputs"].values() for key in ("images", "audio") for f in out.get(key, [])]
    files = [f for f in files if f["filename"].endswith(MEDIA_EXTENSIONS)]  # not image previews
    assert files, f"{path.name} produced no video or audio file"
    seconds = expected_seconds(prompt)
    for f in files:
        data = server.get("/view", params={"filename": f["filename"], "subfolder": f["subfolder"], "type": f["type"]})
        with av.open(io.BytesIO(data.content)) as c:
            assert c.streams.video and c.streams.audio, f"{f['filename']}: needs a video and an audio stream"
            v, a = c.streams.video[0], c.streams.audio[0]
            v_seconds = float(v.duration * v.time_base) if v.duration else v.frames / float(v.average_rate)
            a_seconds = float(a.duration * a.time_base)
            embedded = json.loads(c.metadata.get("workflow", "null"))
        assert abs(v_seconds - seconds) < 0.1, f"{f['filename']}: video lasts {v_seconds:.3f} s, expected {seconds}"
        assert abs(a_seconds - seconds) < 0.1, f"{f['filename']}: audio lasts {a_seconds:.3f} s, expected {seconds}"
        assert embedded == workflow, (
            f"{f['filename']}: the workflow is not embedded (dropping the file would not restore it)"
        )


def test_interrupt_mid_sampling_then_the_next_prompt_runs(server, uploaded_video):
    prompt = load_prompt(server, API_DIR / "UniForm text to video with sound.json", uploaded_video)
    assert_success(server.wait(server.queue(prompt)))  # caches the loaders and encoders
    sampler_id, sampler = node_of(prompt, "UniFormSampler")
    long_run = copy.deepcopy(prompt)
    long_run[sampler_id]["inputs"].update(steps=1000, seed=sampler["inputs"]["seed"] + 1)
    prompt_id = server.queue(long_run)
    deadline = time.monotonic() + 60
    while not server.running(prompt_id):  # the sampler is the first node that is not cached
        assert time.monotonic() < deadline, "the long prompt never started"
        time.sleep(0.2)
    time.sleep(2)
    requests.post(f"{server.url}/interrupt", timeout=10).raise_for_status()
    entry = server.wait(prompt_id, timeout=120)
    interrupted = messages(entry).get("execution_interrupted")
    assert interrupted, f"expected an interrupted run; got {entry['status']}"
    assert interrupted["node_type"] == "UniFormSampler"

    again = copy.deepcopy(prompt)
    again[sampler_id]["inputs"]["seed"] = sampler["inputs"]["seed"] + 2
    assert_success(server.wait(server.queue(again)))


def test_a_batch_gives_one_file_per_item(server, uploaded_video):
    prompt = load_prompt(server, API_DIR / "UniForm text to video with sound.json", uploaded_video)
    sampler_id, sampler = node_of(prompt, "UniFormSampler")
    sampler["inputs"].update(batch_size=2, steps=2, seed=sampler["inputs"]["seed"] + 10)
    entry = server.wait(server.queue(prompt))
    assert_success(entry)
    save_id, _ = node_of(prompt, "UniFormSaveAV")
    assert len(entry["outputs"][save_id]["images"]) == 2


def test_a2v_without_audio_is_a_node_error_and_the_server_keeps_serving(server, uploaded_video):
    prompt = load_prompt(server, API_DIR / "UniForm sound to video.json", uploaded_video)
    latent_id, latent = node_of(prompt, "UniFormTaskLatent")
    del latent["inputs"]["audio_latent"]
    entry = server.wait(server.queue(prompt))
    error = messages(entry).get("execution_error")
    assert entry["status"]["status_str"] == "error" and error, f"expected a node error; got {entry['status']}"
    assert error["node_id"] == latent_id and error["node_type"] == "UniFormTaskLatent"
    assert error["exception_message"].startswith("UniForm Task Latent:")
    assert "audio_latent" in error["exception_message"]
    assert server.get("/system_stats").ok
    prompt = load_prompt(server, API_DIR / "UniForm sound to video.json", uploaded_video)
    assert_success(server.wait(server.queue(prompt)))


def test_outputs_stay_in_the_output_folder(server):
    saved = list(server.output_dir.rglob("*.mp4"))
    assert saved, "no MP4 was written to the output folder"
    assert all(p.name.endswith("_.mp4") for p in saved), "files are not counter-named <prefix>_NNNNN_.mp4"


# ---- the defects of issue 18, through the real server ---------------------------------------------------------


def served_specs(server: Server):
    """test_workflows.py's node specs, built from this server's /object_info, so the UI workflows are checked
    against what the running ComfyUI serves, not against a copy. Optional inputs that a newer ComfyUI added to a
    native node (Create Video's bit_depth) are left out: a graph saved without them keeps their defaults."""
    workflows = load_test_module("test_workflows")
    native = {}
    for name, served in server.get("/object_info").json().items():
        spec = workflows.NATIVE_NODES.get(name, {})
        described = {**spec.get("required", {}), **spec.get("optional", {})}
        inputs = {"required": {}, "optional": {}}
        for input_name, (kind, options, required) in served_inputs(served).items():
            if required or not spec or input_name in described:
                inputs["required" if required else "optional"][input_name] = (kind, options)
        outputs = served["output"][: len(spec["outputs"])] if spec else served["output"]
        native[name] = {
            **inputs,
            "outputs": outputs,
            "extras": spec.get("extras"),
            "trailing": spec.get("trailing", ()),
        }
    return workflows, workflows.Specs({}, {**native, **workflows.FRONTEND_NODES})


@pytest.mark.parametrize("name", [p.stem for p in API_FILES])
def test_ui_workflow_loads_against_the_served_nodes(server, name):
    """What the frontend fetches (/api/workflow_templates/<pack>/<name>.json) has a UUID id, uses only served
    nodes, and its widget values are valid for them: every combo value, the Load Video file included, is one
    the server offers."""
    workflows, spec_of = served_specs(server)
    wf = server.get(f"/api/workflow_templates/{LINK_NAME}/{name}.json").json()
    assert wf == json.loads((API_DIR.parent / f"{name}.json").read_text())
    assert str(uuid.UUID(wf["id"])) == wf["id"]
    for node in wf["nodes"]:
        workflows.ui_widget_values(node, spec_of(node["type"]))
    api = json.loads((API_DIR / f"{name}.json").read_text())
    for node in api.values():
        node.pop("_meta", None)
    assert workflows.ui_to_api(wf, spec_of) == api


def test_load_video_workflow_runs_as_loaded(server):
    """UniForm video file to sound names uniform_example.mp4; the pack put it into the input folder at import."""
    prompt = json.loads((API_DIR / "UniForm video file to sound.json").read_text())
    for node in prompt.values():
        if node["class_type"] == "UniFormLoadBundle" and node["inputs"]["bundle"] == EMBEDDED_BUNDLE:
            node["inputs"]["bundle"] = server.bundle
    assert_success(server.wait(server.queue(prompt)))


def node_error(entry: dict, node_id: str, node_type: str) -> str:
    error = messages(entry).get("execution_error")
    assert entry["status"]["status_str"] == "error" and error, f"expected a node error; got {entry['status']}"
    assert (error["node_id"], error["node_type"]) == (node_id, node_type), error
    assert error["exception_type"].startswith("uniform_core.errors."), error["exception_type"]
    return error["exception_message"]


@pytest.mark.parametrize("content", ["text", "sound"])
def test_video_encode_on_a_file_that_is_no_video(server, tmp_path, content):
    path = tmp_path / f"not_a_video_{content}.mp4"
    if content == "text":
        path.write_text("this is no video\n" * 50)
    else:
        with wave.open(str(path), "wb") as w:  # sound only: ComfyUI's decode(video=0) raises IndexError
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes(bytes(32000))
    prompt = load_prompt(server, API_DIR / "UniForm video file to sound.json", server.upload(path))
    encode_id, _ = node_of(prompt, "UniFormVideoEncode")
    message = node_error(server.wait(server.queue(prompt)), encode_id, "UniFormVideoEncode")
    assert message.startswith("UniForm Video Encode: video "), message  # names the input
    assert "IndexError" not in message and "Traceback" not in message, message


def test_t2av_without_text_is_refused(server, uploaded_video):
    prompt = load_prompt(server, API_DIR / "UniForm text to video with sound.json", uploaded_video)
    sampler_id, sampler = node_of(prompt, "UniFormSampler")
    del sampler["inputs"]["text"]
    message = node_error(server.wait(server.queue(prompt)), sampler_id, "UniFormSampler")
    assert message.startswith("UniForm Sampler: task 't2av' needs the text input"), message
