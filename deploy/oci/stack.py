#!/usr/bin/env python3
"""Run the chart's workloads from the real images with podman, the way a node would, and check them.

No kube-apiserver or kubelet can be had on these machines, so this plays the node for one render of
the chart (``helm template`` with deploy/oci/values.yaml: our images only, the file store on a shared
claim, everything else the chart's defaults: TLS + mTLS + tokens, models.source=image, the probes,
the shutdown timings):

* every rendered Deployment becomes a podman pod on its own network namespace, on one podman network
  whose DNS answers the names of the Services that select it (``dns:///audiolime-separator:50051``
  resolves as in a cluster);
* volumes: emptyDir and the claim are host directories owned by the pod's fsGroup, Secrets and
  ConfigMaps are files (group fsGroup, their defaultMode) mounted read-only;
* containers run with the rendered args, env (values and secretKeyRefs), mounts, user/group,
  readOnlyRootFilesystem, dropped capabilities, no-new-privileges and memory/CPU limits;
* init containers run first, to completion, with no network at all (``--network none``);
* the kubelet's probes are made from the host to the pod's address (gRPC health with the rendered
  service name, HTTP, TCP) or with ``podman exec``; the startup probe must pass within its budget;
* stopping runs the preStop hook, then ``podman stop -t terminationGracePeriodSeconds`` (SIGTERM,
  SIGKILL at the end of the grace): a graceful stop exits 0 before the grace runs out.

Then it checks what an operator relies on: each image run bare says what it needs in one line; the
init container filled the model volume; the containers run as 10001 on a read-only root; an
explanation of a real song goes through separator, tagger and explainer, with every presigned URL
downloaded from the host (the explainer's ports published, ``explainer.publicUrl`` naming them);
every pod stops gracefully within its grace period. Exit 0 when every check passed; the log names
each check, and ``--report`` gets the numbers (JSON).

Usage (after deploy/oci/images.py; needs the project's venv for PyYAML, gRPC and the client):
    .venv/bin/python deploy/oci/stack.py [--song FILE] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import images  # noqa: E402 - this folder's podman settings and image names

CHART = ROOT / "deploy" / "helm" / "audiolime"
VALUES = HERE / "values.yaml"
NETWORK = "audiolime-oci"
RELEASE, NAMESPACE = "audiolime", "audiolime"
SONG = "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"  # 133 s, female vocals (CC BY; ../shared/audio)
TAG = "female vocalists"
ORDER = ("separator", "tagger", "explainer")  # backends first, as a rollout would find them


def log(msg: str) -> None:
    print(f"[stack {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def podman(*args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=images.podman_env(), check=check, text=True,
                          capture_output=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(value: str) -> str:
    return base64.b64decode(value).decode()


class Checks:
    """Named checks: each logged as it passes or fails; the run fails if any failed."""

    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def record(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        log(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return ok

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.results if not ok]


# -- the render --------------------------------------------------------------------------------------
def render(sets: list[str]) -> list[dict]:
    import yaml

    spec = importlib.util.spec_from_file_location("fetch_k8s_tools", ROOT / "scripts" / "fetch_k8s_tools.py")
    fetcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetcher)
    helm = fetcher.fetch()["helm"]
    cmd = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(VALUES)]
    for item in sets:
        cmd += ["--set", item]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict], kind: str, name: str) -> dict | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


# -- the node ----------------------------------------------------------------------------------------
@dataclass
class Pod:
    name: str
    component: str
    doc: dict
    ip: str = ""
    containers: list[str] = field(default_factory=list)
    volumes: dict[str, Path] = field(default_factory=dict)
    ready_s: float = 0.0

    @property
    def spec(self) -> dict:
        return self.doc["spec"] if self.doc["kind"] == "Pod" else self.doc["spec"]["template"]["spec"]

    @property
    def main(self) -> dict:
        return self.spec["containers"][0]

    @property
    def grace(self) -> int:
        return int(self.spec.get("terminationGracePeriodSeconds", 30))


class Node:
    """Runs rendered pods with podman (see the module docstring)."""

    def __init__(self, docs: list[dict], work: Path, publish: dict[str, dict[int, int]]) -> None:
        self.docs, self.work, self.publish = docs, work, publish
        self.claims: dict[str, Path] = {}
        self.pods: list[Pod] = []

    # .. volumes ...........................................................................
    def _volumes(self, pod: Pod) -> None:
        fs_group = int(pod.spec.get("securityContext", {}).get("fsGroup", 0))
        base = self.work / "pods" / pod.name
        for vol in pod.spec.get("volumes", []):
            path = base / vol["name"]
            if "emptyDir" in vol:  # the kubelet makes it 0777
                path.mkdir(parents=True)
                path.chmod(0o777)
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                if claim not in self.claims:  # a fresh volume, group fsGroup (what fsGroup does)
                    self.claims[claim] = self.work / "claims" / claim
                    self.claims[claim].mkdir(parents=True)
                    os.chown(self.claims[claim], 0, fs_group)
                    self.claims[claim].chmod(0o2775)
                path = self.claims[claim]
            elif "secret" in vol or "configMap" in vol:
                kind, key = ("Secret", "secretName") if "secret" in vol else ("ConfigMap", "name")
                source = vol["secret" if kind == "Secret" else "configMap"]
                obj = find(self.docs, kind, source[key])
                if obj is None:
                    raise SystemExit(f"stack.py: {pod.name}: {kind} {source[key]} is not rendered")
                data = {k: (b64(v) if kind == "Secret" else v) for k, v in (obj.get("data") or {}).items()}
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                path.mkdir(parents=True)
                path.chmod(0o755)
                for item in items:
                    target = path / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
                    os.chown(target, 0, fs_group)
                    target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
            else:
                raise SystemExit(f"stack.py: {pod.name}: volume {vol['name']} {sorted(vol)} is not played here")
            pod.volumes[vol["name"]] = path

    # .. one container .....................................................................
    def _env(self, c: dict) -> list[str]:
        out = []
        for e in c.get("env", []):
            if "value" in e:
                value = str(e["value"])
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                secret = find(self.docs, "Secret", ref["name"])
                if secret is None:
                    raise SystemExit(f"stack.py: env {e['name']}: Secret {ref['name']} is not rendered")
                value = b64(secret["data"][ref["key"]])
            out += ["-e", f"{e['name']}={value}"]
        return out

    def _run_args(self, pod: Pod, c: dict) -> list[str]:
        psc, sc = pod.spec.get("securityContext", {}), c.get("securityContext", {})
        uid, gid = sc.get("runAsUser", psc.get("runAsUser")), sc.get("runAsGroup", psc.get("runAsGroup"))
        args = []
        if uid is not None:
            args += ["--user", f"{uid}:{gid if gid is not None else uid}"]
        if "fsGroup" in psc:
            args += ["--group-add", str(psc["fsGroup"])]
        if sc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        for cap in sc.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", cap.lower()]
        for cap in sc.get("capabilities", {}).get("add", []):
            args += ["--cap-add", cap.lower()]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        limits = c.get("resources", {}).get("limits", {})
        if "memory" in limits:
            args += ["--memory", str(limits["memory"]).replace("Gi", "g").replace("Mi", "m")]
        if "cpu" in limits:
            cpu = str(limits["cpu"])
            cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
            args += ["--cpus", str(min(cores, os.cpu_count() or 1))]  # podman refuses more than the host has
        for m in c.get("volumeMounts", []):
            host = pod.volumes[m["name"]] / m["subPath"] if m.get("subPath") else pod.volumes[m["name"]]
            args += ["-v", f"{host}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"]
        args += self._env(c)
        if c.get("command"):
            args += ["--entrypoint", json.dumps(c["command"])]
        return args

    def _argv(self, c: dict) -> list[str]:
        return [str(a) for a in c.get("args", [])]

    # .. a pod ..............................................................................
    def start(self, doc: dict) -> Pod:
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = Pod(doc["metadata"]["name"], component, doc)
        self._volumes(pod)
        labels = doc["spec"]["template"]["metadata"]["labels"]
        aliases = [s["metadata"]["name"] for s in self.docs if s["kind"] == "Service"
                   and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        create = ["pod", "create", "--name", pod.name, "--network", NETWORK]
        for alias in aliases:
            create += ["--network-alias", alias]
        for container_port, host_port in self.publish.get(component, {}).items():
            create += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
        podman(*create)
        self.pods.append(pod)
        for init in pod.spec.get("initContainers", []):
            name = f"{pod.name}-{init['name']}"
            started = time.monotonic()
            proc = podman("run", "--name", name, "--network", "none", *self._run_args(pod, init),
                          init["image"], *self._argv(init), check=False, timeout=900)
            out = (proc.stdout + proc.stderr).strip()
            podman("rm", "-f", name, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} exited {proc.returncode} without network: {out[-600:]}")
            log(f"{name}: exit 0 in {time.monotonic() - started:.0f} s without network: {out.splitlines()[-1:]}")
        c = pod.main
        name = f"{pod.name}-{c['name']}"
        podman("run", "-d", "--pod", pod.name, "--name", name, *self._run_args(pod, c), c["image"], *self._argv(c))
        pod.containers.append(name)
        # The pod's address exists once its infra container runs (with its first container).
        infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod.name).stdout.strip()
        pod.ip = podman("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}',
                        infra).stdout.strip()
        if not pod.ip:
            raise RuntimeError(f"{pod.name}: no address on the network {NETWORK}")
        return pod

    # .. probes ............................................................................
    def probe(self, pod: Pod, probe: dict) -> tuple[bool, str]:
        """One attempt, as the kubelet makes it (from the node to the pod's address)."""
        timeout = probe.get("timeoutSeconds", 1)
        ports = {p["name"]: p["containerPort"] for p in pod.main.get("ports", []) if "name" in p}
        if "grpc" in probe:
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            port = ports.get(probe["grpc"]["port"], probe["grpc"]["port"])
            with grpc.insecure_channel(f"{pod.ip}:{port}") as channel:
                try:
                    resp = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout)
                except grpc.RpcError as exc:
                    return False, f"gRPC health: {exc.code().name}"
            return resp.status == health_pb2.HealthCheckResponse.SERVING, \
                f"gRPC health: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
        if "httpGet" in probe:
            port = ports.get(probe["httpGet"]["port"], probe["httpGet"]["port"])
            try:
                url = f"http://{pod.ip}:{port}{probe['httpGet'].get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    return 200 <= resp.status < 400, f"HTTP {resp.status}"
            except OSError as exc:
                return False, f"HTTP: {exc}"
        if "tcpSocket" in probe:
            port = ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
            try:
                with socket.create_connection((pod.ip, int(port)), timeout=timeout):
                    return True, "TCP connected"
            except OSError as exc:
                return False, f"TCP: {exc}"
        if "exec" in probe:
            proc = podman("exec", pod.containers[0], *probe["exec"]["command"], check=False, timeout=timeout + 5)
            return proc.returncode == 0, f"exec exit {proc.returncode}"
        return False, f"unknown probe {sorted(probe)}"

    def wait_started(self, pod: Pod, started: float) -> tuple[bool, str]:
        """The startup probe (else readiness) until it passes within its budget, then readiness
        and liveness once each."""
        c = pod.main
        first = c.get("startupProbe") or c.get("readinessProbe")
        budget = first.get("initialDelaySeconds", 0) + first.get("periodSeconds", 10) * first.get("failureThreshold", 3)
        deadline = started + budget
        what = ""
        while True:
            ok, what = self.probe(pod, first)
            if ok:
                break
            state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", pod.containers[0]).stdout
            if not state.startswith("running"):
                tail = podman("logs", "--tail", "5", pod.containers[0], check=False)
                return False, f"container {state.strip()}: {(tail.stdout + tail.stderr).strip()[-600:]}"
            if time.monotonic() > deadline:
                return False, f"startup probe still failing after its {budget} s budget: {what}"
            time.sleep(min(2.0, first.get("periodSeconds", 10)))
        pod.ready_s = time.monotonic() - started
        for kind in ("readinessProbe", "livenessProbe"):
            if kind in c:
                ok, what = self.probe(pod, c[kind])
                if not ok:
                    return False, f"{kind}: {what}"
        return True, f"startup, readiness and liveness probes pass ({pod.ready_s:.0f} s after start; {what})"

    def stop(self, pod: Pod) -> tuple[bool, str]:
        """preStop, then SIGTERM and the grace period; graceful = exit 0 before the grace ends."""
        name = pod.containers[0]
        started = time.monotonic()
        hook = pod.main.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        if hook:
            podman("exec", name, *hook, check=False, timeout=pod.grace)
        left = max(1, int(pod.grace - (time.monotonic() - started)))
        podman("stop", "-t", str(left), name, check=False, timeout=pod.grace + 30)
        seconds = time.monotonic() - started
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        ok = code == "0" and seconds < pod.grace
        return ok, f"exit {code} {seconds:.1f} s after the preStop hook began (grace {pod.grace} s)"

    def run_to_completion(self, doc: dict, timeout: float) -> tuple[int, str]:
        """A bare Pod (the helm test hook) on the network, run once: (exit code, its output)."""
        pod = Pod(doc["metadata"]["name"], "test", doc)
        self._volumes(pod)
        podman("pod", "create", "--name", pod.name, "--network", NETWORK)
        self.pods.append(pod)
        c = pod.main
        proc = podman("run", "--pod", pod.name, "--name", f"{pod.name}-{c['name']}", *self._run_args(pod, c),
                      c["image"], *self._argv(c), check=False, timeout=timeout)
        podman("pod", "rm", "-f", pod.name, check=False)
        self.pods.remove(pod)
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    def cleanup(self) -> None:
        for pod in self.pods:
            podman("pod", "rm", "-f", pod.name, check=False)


# -- checks ------------------------------------------------------------------------------------------
def bare_runs(checks: Checks, registry: str, tag: str) -> None:
    """Each image run with no env, volume or argument: a clear one-line error (exit != 0)."""
    for name in images.IMAGES:
        image = images.image_name(name, registry, tag)
        try:
            proc = podman("run", "--rm", "--network", "none", "--read-only", image, check=False, timeout=180)
        except subprocess.TimeoutExpired:
            checks.record(f"{name} image run bare", False, "still running after 180 s")
            continue
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "tensorflow/" not in line
                 and "rebuild TensorFlow" not in line and "TF-TRT" not in line]
        ok = proc.returncode != 0 and len(lines) == 1 and "error" in lines[0]
        checks.record(f"{name} image run bare", ok, f"exit {proc.returncode}: {' | '.join(lines)[-300:]}")


def explain_song(checks: Checks, docs: list[dict], song: Path, grpc_port: int, out: Path) -> dict:
    from audiolime.client import ExplainerClient, fetch
    from audiolime.v1 import common_pb2, explainer_pb2

    ca = out / "ca.crt"
    ca.write_text(b64(find(docs, "Secret", "audiolime-explainer-tls")["data"]["ca.crt"]))
    _, _, token = b64(find(docs, "Secret", "audiolime-explainer-auth-tokens")["data"]["tokens"]).strip().partition(":")
    request = explainer_pb2.ExplainRequest(
        audio=common_pb2.AudioInput(content=song.read_bytes(), filename=song.name), model="musicnn-msd",
        tags=[TAG], num_samples=128, seed=0, top_k=3, window_start_s=45.0)
    started = time.monotonic()
    with ExplainerClient(f"127.0.0.1:{grpc_port}", timeout_s=900, token=token, ca=ca) as client:
        explanation = client.explain(request)
    seconds = time.monotonic() - started
    components = [c for t in explanation.targets for c in t.components]
    checks.record("an explanation of a real song through separator, tagger and explainer containers",
                  bool(explanation.targets) and explanation.targets[0].tag == TAG and len(components) > 0,
                  f"{song.name} ({song.stat().st_size} bytes), {len(components)} components of {TAG!r} in {seconds:.0f} s "
                  f"(TLS, token)")
    urls = [explanation.manifest_url] + [c.url for c in components if c.url]
    got = {}
    for url in urls:
        got[url] = fetch(url)
    wavs = [body for url, body in got.items() if url != explanation.manifest_url]
    manifest = json.loads(got[explanation.manifest_url])
    checks.record("every presigned URL downloads from the host",
                  all(b[:4] == b"RIFF" for b in wavs) and bool(wavs) and "targets" in json.dumps(manifest),
                  f"{len(urls)} URLs (manifest + {len(wavs)} WAVs, {sum(map(len, wavs))} bytes) from "
                  f"{urls[0].split('?')[0].rsplit('/', 2)[0]}/...")
    return {"seconds": round(seconds), "components": len(components), "urls": len(urls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("AUDIOLIME_SHARED", ROOT.parent / "shared"))
    parser.add_argument("--song", type=Path, default=shared / "audio" / SONG, help="a real recording (default: %(default)s)")
    parser.add_argument("--registry", default=images.REGISTRY)
    parser.add_argument("--tag", default=images.TAG)
    parser.add_argument("--keep", action="store_true", help="leave the pods running (podman pod ls)")
    parser.add_argument("--report", type=Path, default=ROOT / "out" / "oci" / "stack.json")
    args = parser.parse_args(argv)
    if not args.song.is_file():
        parser.error(f"--song {args.song}: no such file")
    missing = [n for n in images.IMAGES if not images.image_exists(images.image_name(n, args.registry, args.tag))]
    if missing:
        parser.error(f"images not built: {', '.join(missing)} (python3 deploy/oci/images.py)")
    checks, report = Checks(), {}
    bare_runs(checks, args.registry, args.tag)

    grpc_port, http_port = free_port(), free_port()
    docs = render([f"explainer.publicUrl=http://127.0.0.1:{http_port}", f"image.registry={args.registry}",
                   f"image.tag={args.tag}"])
    workloads = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "Deployment"}
    explainer = workloads["explainer"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in explainer["ports"]}
    work = Path(tempfile.mkdtemp(prefix="audiolime-oci-"))
    node = Node(docs, work, {"explainer": {ports["grpc"]: grpc_port, ports["http"]: http_port}})
    for pod_name in [n for n in podman("pod", "ps", "--format", "{{.Name}}").stdout.split() if n.startswith(RELEASE + "-")]:
        podman("pod", "rm", "-f", pod_name, check=False)  # left by an earlier --keep
    podman("network", "rm", "-f", NETWORK, check=False)
    podman("network", "create", NETWORK)
    try:
        for component in ORDER:
            doc = workloads[component]
            started = time.monotonic()
            try:
                pod = node.start(doc)
            except RuntimeError as exc:
                checks.record(f"{component}: init containers", False, str(exc))
                break
            ok, detail = node.wait_started(pod, started)
            checks.record(f"{component} pod from {pod.main['image']} started and healthy", ok, detail)
            report[component] = {"image": pod.main["image"], "ready_s": round(pod.ready_s, 1)}
            if not ok:
                break
            user = podman("exec", pod.containers[0], "id", "-u").stdout.strip()
            write = podman("exec", pod.containers[0], "sh", "-c", "touch /opt/probe-write", check=False)
            checks.record(f"{component} runs as the chart's non-root user on a read-only root", user == "10001"
                          and write.returncode != 0 and "Read-only" in write.stderr,
                          f"uid {user}; writing /opt: {write.stderr.strip()}")
            models = pod.volumes.get("models")
            if models is not None and pod.spec.get("initContainers"):
                marker = models / ".audiolime-models.json"
                files = [p for p in models.rglob("*") if p.is_file()]
                owners = {p.stat().st_uid for p in files}
                checks.record(f"{component}: the init container filled the model volume from the models image",
                              marker.is_file() and owners == {10001},
                              f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB, "
                              f"owned by uid {sorted(owners)}, marker {'present' if marker.is_file() else 'missing'}")
        if not checks.failed:
            report["explanation"] = explain_song(checks, docs, args.song, grpc_port, work)
            hook = next((d for d in docs if d["kind"] == "Pod"
                         and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"), None)
            if hook is not None:
                started = time.monotonic()
                code, out = node.run_to_completion(hook, timeout=600)
                lines = [line for line in out.splitlines() if line.strip()]
                shown = " | ".join(lines[:1] + lines[-3:])[-500:]
                checks.record("`helm test`: the chart's test pod (health + a tiny explanation) succeeds", code == 0,
                              f"exit {code} in {time.monotonic() - started:.0f} s: {shown}")
        if not args.keep:
            for pod in reversed(node.pods):
                ok, detail = node.stop(pod)
                checks.record(f"{pod.component} stops gracefully within terminationGracePeriodSeconds", ok, detail)
    finally:
        if not args.keep:
            node.cleanup()
            podman("network", "rm", "-f", NETWORK, check=False)
            shutil.rmtree(work, ignore_errors=True)
    report["checks"] = [{"name": n, "ok": ok, "detail": d} for n, ok, d in checks.results]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    if checks.failed:
        log(f"FAILED: {len(checks.failed)} of {len(checks.results)} checks: {'; '.join(checks.failed)}")
        return 1
    log(f"all {len(checks.results)} checks passed")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
