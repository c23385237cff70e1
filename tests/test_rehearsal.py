"""The device rehearsal (scripts/rehearse_device.sh, issue 24) fails where a lent GPU session would.

The passing rehearsal runs in ``.ci/run`` (it builds the image-shaped environment once, ~2.7 GB, then
reuses it from ``~/.cache/energykit-rehearsal``). These tests check that it *fails*, and says why, when
the session would lose its results: a carried wheel missing (the kit cannot import on the image), or a
step that writes a ninth file where the device tool returns at most 8. They reuse the cached
environment (slow the first time) and are skipped where it cannot be built (no network, no Python 3.12
and no pip).
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "rehearse_device.sh"


def image_field(key: str) -> list[str]:
    for line in (ROOT / "scripts" / "device_image.txt").read_text().splitlines():
        if line.split()[:1] == [key]:
            return line.split()[1:]
    raise KeyError(key)


def rehearse(tmp_path, **env) -> subprocess.CompletedProcess:
    run = tmp_path / "run"
    full = dict(os.environ, RUN=str(run), **env)
    full.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True, timeout=3000)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """The carried wheels, made (downloaded) once."""
    folder = tmp_path_factory.mktemp("wheels")
    p = subprocess.run(["bash", str(SCRIPT), "--wheels"], cwd=ROOT, env=dict(os.environ, WHEELS=str(folder)),
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        pytest.skip(f"the carried wheels cannot be downloaded here: {(p.stdout + p.stderr).strip()[-300:]}")
    assert len(list(folder.glob("*.whl"))) == len(image_field("carry"))
    return folder


def test_device_image_lists_what_the_rehearsal_reads():
    pinned = dict(s.split("==") for s in image_field("pinned"))
    assert pinned["torch"] == "2.11.0" and pinned["transformers"] == "5.17.0"
    lacks = set(image_field("lacks"))
    carried = {s.split("==")[0] for s in image_field("carry")}
    assert carried <= lacks and {"pydantic", "pydantic-core", "h5netcdf"} <= carried
    assert not lacks & set(pinned) and not lacks & set(image_field("present"))
    image = {n.lower().replace("_", "-") for n in image_field("image")}
    assert not lacks & image  # what the image lacks is not in its package list (KINDS.md)
    assert {n.lower().replace("_", "-") for n in pinned} | set(image_field("present")) <= image
    assert [int(image_field(k)[0]) for k in ("return_files", "return_file_mib", "return_depth")] == [8, 16, 2]


def test_rehearsal_fails_when_a_carried_wheel_is_missing(tmp_path, wheels):
    partial = tmp_path / "wheels"
    shutil.copytree(wheels, partial)
    (removed,) = list(partial.glob("pydantic_core-*.whl"))
    removed.unlink()
    p = rehearse(tmp_path, WHEELS=str(partial), FETCH_WHEELS="0", SESSION_S="200")
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert "rehearsal: FAIL" in out and "No module named 'pydantic_core'" in out, out[-3000:]
    summary = (tmp_path / "run" / "out" / "summary.txt").read_text()
    assert "import: the kit does not import here" in summary


def test_rehearsal_fails_when_a_shard_writes_a_ninth_file(tmp_path, wheels):
    """A shard that writes its files where the session's results come back (as gpu_session.sh's shards
    did before issue 24: 8 files each), beside the session's own: more than the tool returns."""
    shard = tmp_path / "shard.sh"
    shard.write_text("#!/usr/bin/env bash\nfor k in 1 2 3 4 5 6 7 8 9; do echo $k > \"$SESSION_OUT/shard_file_$k.txt\"; done\n"
                     "mkdir -p \"$OUT\" && echo 'sweep exit 0 after 0 s' > \"$OUT/sweep.log\"\n")
    shard.chmod(shard.stat().st_mode | stat.S_IEXEC)
    p = rehearse(tmp_path, WHEELS=str(wheels), FETCH_WHEELS="0", SESSION_S="200", CHECK="0", SHARDS="0/1",
                 SHARD_SCRIPT=str(shard))
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert "files under OUT, the device tool returns at most 8" in out, out[-3000:]
    # the shard itself reported success: only the limits check caught it
    assert "shard 0/1 ok" in (tmp_path / "run" / "out" / "summary.txt").read_text()


def test_rehearsal_fails_on_a_file_the_tool_would_not_return(tmp_path, wheels):
    """A folder three down and a name with a space: the device tool drops both."""
    shard = tmp_path / "shard.sh"
    shard.write_text("#!/usr/bin/env bash\nmkdir -p \"$SESSION_OUT/a/b/c\" && echo x > \"$SESSION_OUT/a/b/c/deep.txt\"\n"
                     "echo x > \"$SESSION_OUT/odd name.txt\"\n"
                     "mkdir -p \"$OUT\" && echo 'sweep exit 0 after 0 s' > \"$OUT/sweep.log\"\n")
    p = rehearse(tmp_path, WHEELS=str(wheels), FETCH_WHEELS="0", SESSION_S="200", CHECK="0", SHARDS="0/1",
                 SHARD_SCRIPT=str(shard))
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "3 folders down, more than 2" in out and "odd name.txt has a name" in out, out[-3000:]
