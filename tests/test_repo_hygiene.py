"""The repository names no folder of one machine: every tracked text file is free of absolute paths such as a
home folder, a scratch or temp folder, so a fresh clone works (tests read their data relative to themselves)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Top-level folders that only mean something on one machine; built from names so this file does not match itself.
MACHINE_FOLDERS = ("work", "root", "home", "tmp", "Users", "mnt")
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~/-])/(?:" + "|".join(MACHINE_FOLDERS) + r")/"  # a path from the root, not a URL's or ./x/
    r"|\b[A-Za-z]:\\\\?(?:Users|work)\\"  # a Windows user folder, also JSON-escaped
)


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, text=True
    ).stdout
    files = [ROOT / name for name in listed.split("\0") if name]
    assert files, f"git lists no tracked files under {ROOT}"
    return [f for f in files if f.is_file() and b"\0" not in f.read_bytes()[:8192]]


def test_no_tracked_file_holds_an_absolute_path_of_a_machine():
    found = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if ABSOLUTE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "absolute paths of one machine (use paths relative to the repo or the file):\n" + "\n".join(
        found
    )


def test_the_pattern_finds_what_it_is_for():
    # built from parts so that this file holds no absolute path itself
    home = "/".join(["", MACHINE_FOLDERS[2], "me", "data.wav"])
    shared = "/".join(["", MACHINE_FOLDERS[0], "shared", "golden"])
    hits = [f"open('{home}')", f"x = Path('{shared}')", "C:\\" + "Users\\me\\clip.mp4"]
    misses = ["https://example.org/home/page", "./tmp/out.mp4", "tests/data/golden", "~/ComfyUI/models"]
    assert all(ABSOLUTE_PATH.search(s) for s in hits)
    assert not any(ABSOLUTE_PATH.search(s) for s in misses)
