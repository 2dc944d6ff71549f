#!/usr/bin/env python3
"""Build every audiolime image with podman on a machine without a container registry.

What it does, each step skipped when already done (standard library only; run as root):

1. tools: installs Debian's ``podman``, ``runc`` and ``debootstrap`` if missing (apt-get).
2. config: writes a ``containers.conf`` (named by ``CONTAINERS_CONF`` for every podman call made
   here) with the settings such a machine needs: the ``runc`` runtime (crun refuses a hybrid cgroup
   layout), ``cgroupfs``, a file events logger, and default rlimits no higher than the hard ones
   (rootful podman asks for nofile=1048576, which root without CAP_SYS_RESOURCE may not set).
3. bases: ``localhost/debian:bookworm`` from ``debootstrap --variant=minbase`` piped into ``podman
   import``, then the Python base the Dockerfiles' ``PYTHON_IMAGE`` names: Debian's python3 (3.11)
   with venv and pip, and the host's CA bundle (HTTPS to the package index may pass through a proxy
   whose CA only the host trusts) and apt settings.
4. build: every Dockerfile, unchanged, tagged as the chart names them
   (``<registry>/audiolime-<name>:<tag>``), one at a time; the time and size of each go to
   ``--report`` (JSON).

Usage: python3 deploy/oci/images.py [--only explainer,tagger] [--report out/oci/build.json]
The podman settings are in :func:`podman_env`; deploy/oci/stack.py runs what this builds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".cache" / "oci"
REGISTRY = "ghcr.io/audiolime"
TAG = "0.1.0"
DEBIAN_IMAGE = "localhost/debian:bookworm"
# The Dockerfiles' default PYTHON_IMAGE is the official python:3.11.9-slim-bookworm; this is the
# local stand-in passed as --build-arg (same Debian release, same Python minor version).
PYTHON_IMAGE = "localhost/audiolime-python:3.11-bookworm"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# name -> (Dockerfile, build args). Order: the fastest first, so a broken build shows early.
IMAGES: dict[str, tuple[str, dict[str, str]]] = {
    "explainer": ("services/explainer/Dockerfile", {}),
    "models": ("deploy/models/Dockerfile", {}),
    "tagger": ("services/tagger/Dockerfile", {}),
    "separator": ("services/separator/Dockerfile", {"ACCELERATOR": "cpu"}),
}
PYTHON_CONTAINERFILE = f"""\
FROM {DEBIAN_IMAGE}
COPY ca-certificates.crt /tmp/host-ca.crt
COPY apt.conf.d/ /etc/apt/apt.conf.d/
# The host's CA bundle becomes the image's (apt's first HTTPS fetch would need it too); pip and
# Python's ssl read /etc/ssl/certs/ca-certificates.crt.
RUN export DEBIAN_FRONTEND=noninteractive \\
 && apt-get update -q \\
 && apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip python-is-python3 ca-certificates \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /usr/share/locale/* \\
 && cp /tmp/host-ca.crt /etc/ssl/certs/ca-certificates.crt && rm /tmp/host-ca.crt \\
 && python --version
ENV LANG=C.UTF-8
"""


def log(msg: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def containers_conf() -> Path:
    """The containers.conf every podman call here uses (written once per machine)."""
    hard = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True, check=True).stdout.strip()
    nofile = hard if hard.isdigit() else "1024"
    text = (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    path = STATE / "containers.conf"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf())}


def podman(*args: str, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=podman_env(), check=check, text=True,
                          capture_output=capture, **kw)


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def image_size(name: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", name, capture=True).stdout.strip())


def image_name(name: str, registry: str = REGISTRY, tag: str = TAG) -> str:
    return f"{registry}/audiolime-{name}:{tag}"


def ensure_tools() -> None:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"images.py: {', '.join(missing)} missing; install Debian's podman, runc and debootstrap")
    log(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "podman", "runc", "debootstrap"]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)


def ensure_bases(rebuild: bool = False) -> None:
    if rebuild or not image_exists(DEBIAN_IMAGE):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=STATE) as rootfs:
            log(f"debootstrap --variant=minbase bookworm -> {DEBIAN_IMAGE}")
            subprocess.run(["debootstrap", "--variant=minbase", "bookworm", rootfs, "http://deb.debian.org/debian"],
                           check=True, stdout=subprocess.DEVNULL)
            # What a slim base leaves out: downloaded packages, package lists, documentation, locales.
            for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                            "usr/share/doc/*", "usr/share/man/*", "usr/share/locale/*", "usr/share/info/*"):
                for path in Path(rootfs).glob(pattern):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            podman("import", "-", DEBIAN_IMAGE, stdin=tar.stdout, stdout=subprocess.DEVNULL)
            if tar.wait() != 0:
                raise SystemExit("images.py: tar of the debootstrap tree failed")
        log(f"{DEBIAN_IMAGE}: {time.monotonic() - started:.0f} s")
    if rebuild or not image_exists(PYTHON_IMAGE):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="python-base-", dir=STATE) as ctx:
            shutil.copy(HOST_CA, Path(ctx) / "ca-certificates.crt")
            conf = Path(ctx) / "apt.conf.d"
            conf.mkdir()
            # The host's apt settings (e.g. a snapshot mirror's Check-Valid-Until "false").
            for item in Path("/etc/apt/apt.conf.d").glob("99*"):
                if item.is_file():
                    shutil.copy(item, conf / item.name)
            (Path(ctx) / "Containerfile").write_text(PYTHON_CONTAINERFILE)
            log(f"python base -> {PYTHON_IMAGE}")
            podman("build", "-q", "-t", PYTHON_IMAGE, ctx, stdout=subprocess.DEVNULL)
        log(f"{PYTHON_IMAGE}: {time.monotonic() - started:.0f} s")


def build(name: str, registry: str, tag: str, logs: Path) -> dict:
    """Build one image; returns its name, build seconds and size."""
    dockerfile, args = IMAGES[name]
    target = image_name(name, registry, tag)
    cmd = ["build", "--layers", "-f", str(ROOT / dockerfile), "-t", target, "--build-arg", f"PYTHON_IMAGE={PYTHON_IMAGE}"]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"build-{name}.log"
    log(f"building {target} (log: {log_path})")
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = podman(*cmd, str(ROOT), check=False, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"images.py: {target} failed after {seconds:.0f} s:\n" + "\n".join(tail))
    size = image_size(target)
    log(f"built {target}: {seconds:.0f} s, {size / 1e6:.0f} MB")
    return {"image": target, "seconds": round(seconds), "bytes": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(IMAGES), help=f"comma-separated subset of {', '.join(IMAGES)}")
    parser.add_argument("--registry", default=REGISTRY)
    parser.add_argument("--tag", default=TAG)
    parser.add_argument("--rebuild-bases", action="store_true", help="make the Debian and Python bases again")
    parser.add_argument("--bases-only", action="store_true")
    parser.add_argument("--report", type=Path, default=ROOT / "out" / "oci" / "build.json",
                        help="JSON with each image's build time and size (merged with earlier runs)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(IMAGES))
    if unknown:
        parser.error(f"--only: unknown image(s) {', '.join(unknown)} (known: {', '.join(IMAGES)})")
    ensure_tools()
    STATE.mkdir(parents=True, exist_ok=True)
    ensure_bases(args.rebuild_bases)
    if args.bases_only:
        return 0
    report = json.loads(args.report.read_text()) if args.report.is_file() else {}
    for name in names:
        report[name] = build(name, args.registry, args.tag, args.report.parent)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
