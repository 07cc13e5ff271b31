"""uniform_core.atomic: a file appears whole or not at all, with the user's umask."""

import os
import subprocess
import sys

import pytest

from uniform_core.atomic import atomic_path, write_text


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_sigkill_mid_write_never_leaves_a_partial_destination(tmp_path):
    target = tmp_path / "big.bin"
    code = (
        "import os, sys, time\n"
        "from uniform_core.atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    with open(tmp, 'wb') as f:\n"
        "        f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.kill()
    p.wait()
    assert not target.exists()
