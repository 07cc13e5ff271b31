"""Render workflows/NAME.jpg, the template browser's thumbnail of workflows/NAME.json, from what the graph makes.

Each graph's API twin (workflows/api/NAME.json, which tests/test_workflows.py keeps equal to the UI graph) runs as
shipped, on the embedded uniform-tiny, on a real ComfyUI server with this pack (tests/comfy_host.py starts it on
127.0.0.1 with fresh folders); the thumbnail is drawn from the video its Save node wrote
(uniform_core/eval/thumbnail.py). tests/test_comfy_frontend.py checks the files against runs from the page.

    UNIFORM_COMFYUI_DIR=/path/to/ComfyUI UNIFORM_COMFYUI_PYTHON=/path/to/venv/bin/python \\
        python scripts/render_thumbnails.py [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the real-server harness

from comfy_host import API_DIR, COMFY_DIR, EMBEDDED_BUNDLE, Server, assert_success, saved_video  # noqa: E402

from uniform_core.atomic import write_bytes  # noqa: E402
from uniform_core.eval.thumbnail import jpeg, video_thumbnail  # noqa: E402


def render(server: Server, name: str) -> Path:
    """Run workflows/api/NAME.json on ``server`` and write workflows/NAME.jpg from its video."""
    prompt = json.loads((API_DIR / f"{name}.json").read_text())
    entry = server.wait(server.queue(prompt), timeout=3600)  # the 30 s graph takes minutes on a small CPU
    assert_success(entry)
    target = API_DIR.parent / f"{name}.jpg"
    write_bytes(target, jpeg(video_thumbnail(saved_video(server, entry))))
    return target


def main() -> None:
    names = sorted(p.stem for p in API_DIR.glob("*.json"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"workflows to render (default: all of {', '.join(names)})")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f"no workflows/api/NAME.json for {', '.join(unknown)}")
    if not COMFY_DIR:
        sys.exit("set UNIFORM_COMFYUI_DIR to a ComfyUI checkout (and UNIFORM_COMFYUI_PYTHON to its Python)")
    with tempfile.TemporaryDirectory(prefix="uniform-thumbnails-") as root:
        server = Server(Path(root))
        try:
            server.wait_ready()
            if server.bundle != EMBEDDED_BUNDLE:
                sys.exit("the embedded uniform-tiny is not in this checkout: thumbnails would show random weights")
            for name in args.names or names:
                path = render(server, name)
                print(f"wrote {path} ({path.stat().st_size} bytes)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
