"""A kubelet stand-in for the chart smoke test (tests/test_chart_smoke.py).

Given rendered manifests, it runs every pod whose containers use OUR images the way a node would,
as local processes, and checks the official TF Serving container (whose binary cannot run here)
against what its release supports (deploy/tfserving-versions.json, read from TF Serving's source):

* volumes become temporary directories: an emptyDir per pod, a claim per render (so separator and
  explainer share the file store), ConfigMap/Secret volumes filled from the rendered objects;
  container paths in args, env and ConfigMap files are mapped onto them, and image paths onto the
  files the image's Dockerfile copies in;
* container ports become free local ports (env variables named ``*_PORT`` must name one);
  the S3 endpoint becomes the test's moto server (added when the cloud's is implied);
* the image's ENTRYPOINT, CMD and ENV come from its Dockerfile's runtime stage, with ``audiolime``
  = the venv's console script and ``python`` = this interpreter;
* init containers run first, to completion, with no network at all (``unshare -n``), which is
  what "no registry access at pod start" means;
* then the main container starts and its probes run as the kubelet runs them (gRPC health with the
  rendered service name, HTTP GET path and port, TCP connect, exec), with their timeouts: the
  readiness probe must fail before the program is ready, the startup probe must pass within
  ``initialDelaySeconds + periodSeconds x failureThreshold``, readiness and liveness must then pass;
  termination runs the preStop hook, sends SIGTERM, and requires readiness to fail and the process
  to exit within ``terminationGracePeriodSeconds``.

* cert-manager ``Certificate`` objects are issued the way cert-manager would (a self-signed CA
  Issuer bootstraps a CA; a CA Issuer signs the rest), into the Secrets they name;
* an init container on the TF Serving image that runs ``/bin/sh -c`` (the chart's SSLConfig
  builder) runs with this machine's sh and coreutils, which the image's Ubuntu base also has; the
  SSLConfig it writes is then checked the way TF Serving parses it.

:meth:`Kubelet.serve` runs a whole render at once instead (every pod of ours together, Service
names resolved to the local ports, TF Serving played by our wire-compatible tagger started with
TF Serving's rendered arguments) so that a test can call the explainer through the rendered TLS,
mTLS and tokens.

It returns findings (one line each) instead of raising, so a test can also assert that a broken
manifest IS reported. Not simulated: runAsUser / readOnlyRootFilesystem (the interpreter lives
under a private home here) and resource limits.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TFSERVING_TABLE = REPO / "deploy" / "tfserving-versions.json"
OUR_IMAGE = re.compile(r"(?:^|/)audiolime-(separator|tagger|explainer|models):(\S+)$")
TFSERVING_IMAGE = re.compile(r"(?:^|/)tensorflow/serving:(\S+)$")
DOCKERFILES = {
    "separator": REPO / "services" / "separator" / "Dockerfile",
    "tagger": REPO / "services" / "tagger" / "Dockerfile",
    "explainer": REPO / "services" / "explainer" / "Dockerfile",
    "models": REPO / "deploy" / "models" / "Dockerfile",
}
HOST = "127.0.0.1"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


# -- images ------------------------------------------------------------------------------------------
@dataclass
class Image:
    """What a Dockerfile's runtime stage gives a container: entrypoint, cmd, env, copied files."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    copies: list[tuple[str | None, str, str]]  # (--from stage or None, source, destination)


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def parse_dockerfile(path: Path) -> Image:
    """The runtime (last) stage of a Dockerfile."""
    inst = _instructions(path.read_text())
    last_from = max(i for i, (w, _) in enumerate(inst) if w == "FROM")
    image = Image([], [], {}, [])
    for word, rest in inst[last_from + 1:]:
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                image.env[key] = value
        elif word in ("ENTRYPOINT", "CMD"):
            setattr(image, word.lower(), json.loads(rest))
        elif word == "COPY":
            parts = rest.split()
            stage = next((p.split("=", 1)[1] for p in parts if p.startswith("--from=")), None)
            src, dst = [p for p in parts if not p.startswith("--")][-2:]
            image.copies.append((stage, src, dst))
    return image


def _b64(value: str) -> str:
    return base64.b64decode(value).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def map_paths(text: str, mapping: dict[str, str]) -> str:
    """Replace container paths (whole path components only, longest first) by local ones."""
    if not mapping:
        return text
    alternatives = "|".join(re.escape(p) for p in sorted(mapping, key=len, reverse=True))
    return re.sub(rf"(?<![\w.-])({alternatives})(?![\w.-])", lambda m: mapping[m.group(1)], text)


# -- probes ------------------------------------------------------------------------------------------
def run_probe(probe: dict, ports: dict, exec_fn) -> tuple[bool, str]:
    """One probe attempt the way the kubelet makes it; (success, what happened)."""
    timeout = probe.get("timeoutSeconds", 1)
    if "grpc" in probe:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        port = ports.get(probe["grpc"]["port"])
        if port is None:
            return False, f"gRPC probe port {probe['grpc']['port']} is no containerPort"
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            try:
                resp = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout)
            except grpc.RpcError as exc:
                return False, f"gRPC health: {exc.code().name}"
        ok = resp.status == health_pb2.HealthCheckResponse.SERVING
        return ok, f"gRPC health: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
    if "httpGet" in probe:
        get = probe["httpGet"]
        port = ports.get(get["port"])
        if port is None:
            return False, f"HTTP probe port {get['port']} is no containerPort"
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{get.get('path', '/')}", timeout=timeout) as resp:
                return 200 <= resp.status < 400, f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return False, f"HTTP {exc.code}"
        except OSError as exc:
            return False, f"HTTP: {exc}"
    if "tcpSocket" in probe:
        port = ports.get(probe["tcpSocket"]["port"])
        if port is None:
            return False, f"TCP probe port {probe['tcpSocket']['port']} is no containerPort"
        try:
            with socket.create_connection((HOST, port), timeout=timeout):
                return True, "TCP connected"
        except OSError as exc:
            return False, f"TCP: {exc}"
    if "exec" in probe:
        code = exec_fn(probe["exec"]["command"], timeout)
        return code == 0, f"exec exit {code}"
    return False, f"unknown probe {sorted(probe)}"


# -- pods --------------------------------------------------------------------------------------------
@dataclass
class Render:
    """One rendering (a value set or a kustomize build): its objects and its claims' directories."""

    name: str
    docs: list[dict]
    claims: dict[str, Path] = field(default_factory=dict)

    def find(self, kind: str, name: str) -> dict | None:
        return next((d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


class Kubelet:
    """Runs pods of rendered manifests locally (see the module docstring); collects findings."""

    def __init__(self, workdir: Path, s3_endpoint: str, image_content, make_bucket) -> None:
        self.workdir = workdir
        self.s3_endpoint = s3_endpoint
        self.image_content = image_content  # (image name, tag, build-stage path) -> local dir
        self.make_bucket = make_bucket
        self.table = json.loads(TFSERVING_TABLE.read_text())["releases"]
        self.done: dict[str, list[str]] = {}  # pod key -> findings (each distinct pod runs once)
        self.hooks: dict[str, int] = {}  # preStop command -> exit status (each distinct one runs once)
        self.started: list[str] = []

    # .. entry point .......................................................................
    def check(self, name: str, docs) -> list[str]:
        render = Render(name, [d for d in docs if d])
        findings = issue_certificates(render, self.workdir)
        for doc in render.docs:
            if doc["kind"] not in WORKLOADS:
                continue
            pod = doc["spec"]["template"]["spec"]
            containers = pod.get("initContainers", []) + pod["containers"]
            if not any(OUR_IMAGE.search(c["image"]) or TFSERVING_IMAGE.search(c["image"]) for c in containers):
                continue  # third-party images only (MinIO, mc): not ours to start
            key = self._key(render, pod)
            if key not in self.done:
                self.done[key] = self._run_pod(render, doc, pod)
            findings += [f"{name}: {doc['kind']}/{doc['metadata']['name']}: {f}" for f in self.done[key]]
        return findings

    def _key(self, render: Render, pod: dict) -> str:
        """Everything a pod's behaviour depends on: its spec and the ConfigMaps/Secrets it uses."""
        refs = []
        text = json.dumps(pod, sort_keys=True)
        for kind, rx in (("ConfigMap", r'"configMap": \{"name": "([^"]+)"'), ("Secret", r'"(?:name|secretName)": "([^"]+)"')):
            for ref in sorted(set(re.findall(rx, text))):
                obj = render.find(kind, ref)
                if obj:  # a Secret's keys, not its (possibly random per render) values
                    refs.append(obj.get("data") if kind == "ConfigMap" else sorted(obj.get("data") or {}))
        return hashlib.sha256(json.dumps([pod, refs], sort_keys=True, default=str).encode()).hexdigest()

    # .. one pod ..........................................................................
    def _run_pod(self, render: Render, doc: dict, pod: dict) -> list[str]:
        podir = Path(tempfile.mkdtemp(prefix=f"{doc['metadata']['name']}-", dir=self.workdir))
        volumes: dict[str, Path] = {}
        for vol in pod.get("volumes", []):
            if "emptyDir" in vol:
                if not vol["emptyDir"].get("sizeLimit"):
                    return [f"emptyDir {vol['name']} has no sizeLimit"]
                volumes[vol["name"]] = podir / "volumes" / vol["name"]
                volumes[vol["name"]].mkdir(parents=True)
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                volumes[vol["name"]] = render.claims.setdefault(
                    claim, Path(tempfile.mkdtemp(prefix=f"claim-{claim}-", dir=self.workdir)))
            elif "configMap" in vol or "secret" in vol:
                volumes[vol["name"]] = podir / "volumes" / vol["name"]  # filled per container (paths mapped)
            else:
                return [f"volume {vol['name']}: kind {sorted(vol)} not simulated"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        findings: list[str] = []
        for init in pod.get("initContainers", []):
            proc = self._container(render, pod, init, volumes, podir, init=True)
            if isinstance(proc, list):
                return findings + proc
            try:
                proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode != 0:
                out = (podir / f"{init['name']}.log").read_text(errors="replace")
                tail = " | ".join(out.strip().splitlines()[-3:])
                return findings + [f"init container {init['name']} failed without network at pod start "
                                   f"(exit {proc.returncode}): {tail}"]
        for c in pod["containers"]:
            if TFSERVING_IMAGE.search(c["image"]):
                findings += [f"{c['name']}: {f}" for f in self._check_tfserving(render, pod, c, volumes)]
            elif OUR_IMAGE.search(c["image"]):
                findings += [f"{c['name']}: {f}" for f in self._run_main(render, pod, c, volumes, podir, grace)]
        return findings

    def _mounts(self, render: Render, pod: dict, c: dict, volumes: dict[str, Path]) -> tuple[dict, list[str]]:
        """Container path -> local path for every mount (ConfigMap/Secret files written here)."""
        mapping, findings = {}, []
        for m in c.get("volumeMounts", []):
            local = volumes.get(m["name"])
            if local is None:
                findings.append(f"volumeMount {m['name']} names no pod volume")
                continue
            mapping[m["mountPath"]] = str(local / m["subPath"]) if m.get("subPath") else str(local)
        for m in c.get("volumeMounts", []):
            vol = next((v for v in pod.get("volumes", []) if v["name"] == m["name"]), {})
            for kind, key in (("configMap", "name"), ("secret", "secretName")):
                if kind in vol:
                    obj = render.find("ConfigMap" if kind == "configMap" else "Secret", vol[kind][key])
                    if obj is None:
                        findings.append(f"{kind} {vol[kind][key]} is not rendered")
                        continue
                    target = Path(mapping[m["mountPath"]])
                    target.mkdir(parents=True, exist_ok=True)
                    for name, value in (obj.get("data") or {}).items():
                        text = value if kind == "configMap" else _b64(value)
                        (target / name).write_text(map_paths(text, mapping))
        return mapping, findings

    def _env_value(self, render: Render, e: dict) -> tuple[str | None, str | None]:
        if "value" in e:
            return str(e["value"]), None
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = render.find("Secret", ref["name"])
            if secret is None:  # managed outside the chart (existingSecret): any value will do
                return f"smoke-{ref['name']}-{ref['key']}", None
            data = {**{k: _b64(v) for k, v in (secret.get("data") or {}).items()}, **(secret.get("stringData") or {})}
            if ref["key"] not in data:
                return None, f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}"
            return data[ref["key"]], None
        return None, f"env {e['name']}: {sorted(e.get('valueFrom', {}))} not simulated"

    def _container(self, render: Render, pod: dict, c: dict, volumes: dict[str, Path], podir: Path,
                   init: bool = False, ports: dict | None = None):
        """Start one of our containers; returns the Popen, or a list of findings."""
        if init and TFSERVING_IMAGE.search(c["image"]):
            return self._shell_init(render, pod, c, volumes, podir)
        match = OUR_IMAGE.search(c["image"])
        if not match:
            return [f"{c['name']}: image {c['image']} is neither ours nor TF Serving: cannot run it here"]
        name, tag = match.groups()
        image = parse_dockerfile(DOCKERFILES[name])
        mapping, findings = self._mounts(render, pod, c, volumes)
        for stage, src, dst in image.copies:
            if stage is None:
                local = REPO / src
            elif src == "/opt/venv":  # the build stage's venv: this one (audiolime installed, editable)
                local = Path(sys.prefix)
            else:
                local = self.image_content(name, tag, src)
            mapping.setdefault(dst, str(local))
        env = {k: map_paths(v, mapping) for k, v in image.env.items() if k not in ("PATH", "LD_LIBRARY_PATH")}
        env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        if any(src == "/opt/venv" for _, src, _ in image.copies):  # the image's audiolime is this checkout's,
            env.setdefault("PYTHONPATH", str(REPO / "src"))  # even when the venv's editable install is another's
        if pod.get("enableServiceLinks", True):  # the kubelet's <SERVICE>_* variables
            for svc in (d for d in render.docs if d["kind"] == "Service"):
                prefix = re.sub(r"[^A-Z0-9]", "_", svc["metadata"]["name"].upper())
                first = svc["spec"]["ports"][0]["port"]
                env[f"{prefix}_SERVICE_HOST"], env[f"{prefix}_SERVICE_PORT"] = "10.96.0.10", str(first)
                env[f"{prefix}_PORT"] = f"tcp://10.96.0.10:{first}"
        declared = {p["containerPort"] for p in c.get("ports", [])}
        ports = ports if ports is not None else {}
        for e in c.get("env", []):
            value, problem = self._env_value(render, e)
            if problem:
                findings.append(problem)
                continue
            if "$(" in value:
                findings.append(f"env {e['name']}: $(VAR) references are not simulated")
            if e["name"].endswith("_PORT") and e["name"].startswith("AUDIOLIME_"):
                if not value.isdigit() or int(value) not in declared:
                    findings.append(f"env {e['name']}={value} is no containerPort of the container")
                else:
                    value = str(ports[int(value)])
            env[e["name"]] = map_paths(value, mapping)
        if env.get("AUDIOLIME_STORE", "").startswith("s3://"):
            self.make_bucket(env["AUDIOLIME_STORE"][5:].split("/", 1)[0])
            env["AWS_ENDPOINT_URL"] = self.s3_endpoint  # MinIO's Service or the cloud's S3: moto here
            env.setdefault("AWS_ACCESS_KEY_ID", "smoke")  # IRSA / workload identity stand-in
            env.setdefault("AWS_SECRET_ACCESS_KEY", "smoke")
        command = c.get("command") or image.entrypoint
        args = c["args"] if "args" in c else ([] if "command" in c else image.cmd)
        argv = [map_paths(str(a), mapping) for a in [*command, *args]]
        program = {"audiolime": str(Path(sys.executable).parent / "audiolime"), "python": sys.executable,
                   "python3": sys.executable}.get(argv[0], argv[0])
        if not os.path.exists(program) and not shutil.which(program):
            return findings + [f"program {argv[0]} does not exist in the image"]
        argv[0] = program
        if findings:
            return findings
        if init:
            argv = ["unshare", "--net", "--", *argv]
        log = open(podir / f"{c['name']}.log", "wb")
        self.started.append(f"{render.name}:{c['name']}")
        return subprocess.Popen(argv, env=env, cwd=podir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _shell_init(self, render: Render, pod: dict, c: dict, volumes: dict[str, Path], podir: Path):
        """An init container on the TF Serving image running ``/bin/sh -c SCRIPT`` (its Ubuntu base
        has sh, sed and coreutils, as this machine does): run here, paths mapped, no network."""
        command = [*c.get("command", []), *c.get("args", [])]
        if command[:2] not in (["/bin/sh", "-c"], ["sh", "-c"]) or len(command) != 3:
            return [f"init container {c['name']}: only `/bin/sh -c SCRIPT` runs on the TF Serving image "
                    f"(no entrypoint of its own for init work): {command[:2]}"]
        mapping, findings = self._mounts(render, pod, c, volumes)
        if findings:
            return findings
        log = open(podir / f"{c['name']}.log", "wb")
        self.started.append(f"{render.name}:{c['name']}")
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
        return subprocess.Popen(["unshare", "--net", "--", "/bin/sh", "-c", map_paths(command[2], mapping)], env=env,
                                cwd=podir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _exec(self, argv: list[str], timeout: float) -> int:
        key = json.dumps(argv)
        if key not in self.hooks:
            try:
                self.hooks[key] = subprocess.run(argv, timeout=timeout, capture_output=True).returncode
            except (OSError, subprocess.TimeoutExpired):
                self.hooks[key] = -1
        return self.hooks[key]

    def _run_main(self, render: Render, pod: dict, c: dict, volumes: dict[str, Path], podir: Path,
                  grace: int) -> list[str]:
        ports = {p["containerPort"]: _free_port() for p in c.get("ports", [])}
        named = {p["name"]: ports[p["containerPort"]] for p in c.get("ports", []) if "name" in p}
        probe_ports = {**ports, **named}
        proc = self._container(render, pod, c, volumes, podir, ports=ports)
        if isinstance(proc, list):
            return proc
        log = podir / f"{c['name']}.log"
        findings: list[str] = []

        def tail() -> str:
            return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])

        def probe(kind: str) -> tuple[bool, str]:
            return run_probe(c[kind], probe_ports, lambda argv, t: self._exec(argv, t))

        try:
            for kind in ("readinessProbe", "livenessProbe"):
                if kind not in c:
                    findings.append(f"no {kind}")
            if findings:
                return findings
            ok, what = probe("readinessProbe")
            if ok:
                findings.append(f"readiness passed before the program could be ready ({what})")
            start = c.get("startupProbe") or c["readinessProbe"]
            budget = start.get("initialDelaySeconds", 0) + start.get("periodSeconds", 10) * start.get("failureThreshold", 3)
            deadline = time.monotonic() + budget
            kind = "startupProbe" if "startupProbe" in c else "readinessProbe"
            while True:
                ok, what = probe(kind)
                if ok:
                    break
                if proc.poll() is not None:
                    return findings + [f"exited with {proc.returncode} before its {kind} passed ({what}): {tail()}"]
                if time.monotonic() > deadline:
                    return findings + [f"{kind} still failing after its {budget} s budget ({what}): {tail()}"]
                time.sleep(0.3)
            for kind in ("readinessProbe", "livenessProbe"):
                ok, what = probe(kind)
                if not ok:
                    findings.append(f"{kind} failed after startup ({what})")
            # Termination: preStop hook, SIGTERM, readiness must fail, exit within the grace period.
            t0 = time.monotonic()
            hook = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if hook and self._exec(hook, grace) != 0:
                findings.append(f"preStop hook {hook} failed")
            proc.send_signal(signal.SIGTERM)
            ready = c["readinessProbe"]
            window = ready.get("periodSeconds", 10) * ready.get("failureThreshold", 3)
            unready_by = time.monotonic() + window
            while probe("readinessProbe")[0]:
                if time.monotonic() > unready_by:
                    findings.append(f"readiness still passing {window} s after SIGTERM (process "
                                    f"{'alive' if proc.poll() is None else 'gone'}): {tail()}")
                    break
                time.sleep(0.1)
            remaining = grace - (time.monotonic() - t0) - (float(hook[1]) if hook and hook[0] == "sleep" else 0)
            try:
                proc.wait(timeout=max(remaining, 0.1))
            except subprocess.TimeoutExpired:
                findings.append(f"still running {grace} s after termination began: the kubelet would SIGKILL it: "
                                f"{tail()}")
            return findings
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # .. a whole render at once ...........................................................................
    @contextlib.contextmanager
    def serve(self, name: str, docs, ready_s: float = 300.0):
        """Run every Deployment of ours in ``docs`` together (init containers first, no network),
        Service names in env values and arguments resolved to the pods' local ports, and yield a
        :class:`Stack` once each readiness probe passes. The official TF Serving container is played
        by our tagger, started with TF Serving's rendered arguments (it accepts the same flags,
        ``--ssl_config_file`` included); its REST probes have no counterpart there, so its gRPC port
        accepting connections stands for readiness. Everything is killed on exit."""
        render = Render(name, [d for d in docs if d])
        problems = issue_certificates(render, self.workdir)
        assert not problems, problems
        pods = [d for d in render.docs if d["kind"] == "Deployment"
                and any(OUR_IMAGE.search(c["image"]) or TFSERVING_IMAGE.search(c["image"])
                        for c in d["spec"]["template"]["spec"]["containers"])]
        ports = {d["metadata"]["name"]: {p["containerPort"]: _free_port()
                                         for p in d["spec"]["template"]["spec"]["containers"][0].get("ports", [])}
                 for d in pods}
        addresses: dict[str, str] = {}  # "<service>:<port>" -> "127.0.0.1:<local port>"
        for svc in (d for d in render.docs if d["kind"] == "Service"):
            pod = next((d for d in pods if _matches(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])),
                       None)
            if pod is None:
                continue
            c = pod["spec"]["template"]["spec"]["containers"][0]
            named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for sp in svc["spec"]["ports"]:
                target = sp.get("targetPort", sp["port"])
                local = ports[pod["metadata"]["name"]].get(named.get(target, target))
                if local:
                    addresses[f"{svc['metadata']['name']}:{sp['port']}"] = f"{HOST}:{local}"
        resolve = re.compile(r"(?:dns:///)?(" + "|".join(re.escape(a) for a in sorted(addresses, key=len, reverse=True))
                             + r")(?![\w.-])") if addresses else None

        def local(text: str) -> str:
            return resolve.sub(lambda m: addresses[m.group(1)], text) if resolve else text

        procs: list[tuple[str, subprocess.Popen, dict, dict]] = []
        try:
            for doc in pods:
                pod = copy.deepcopy(doc["spec"]["template"]["spec"])
                podir = Path(tempfile.mkdtemp(prefix=f"{doc['metadata']['name']}-", dir=self.workdir))
                volumes = self._volumes(render, pod, podir)
                for init in pod.get("initContainers", []):
                    proc = self._container(render, pod, init, volumes, podir, init=True)
                    assert not isinstance(proc, list), proc
                    assert proc.wait(timeout=600) == 0, (podir / f"{init['name']}.log").read_text()
                c = pod["containers"][0]
                mine = ports[doc["metadata"]["name"]]
                for e in c.get("env", []):
                    if "value" in e:
                        e["value"] = local(str(e["value"]))
                if TFSERVING_IMAGE.search(c["image"]):  # our tagger plays tensorflow_model_server
                    c["image"] = "audiolime-tagger:stand-in"
                    c["command"] = ["audiolime", "serve", "tagger"]
                    c["args"] = [re.sub(r"^--port=(\d+)$", lambda m, mine=mine: f"--port={mine[int(m.group(1))]}", a)
                                 for a in c.get("args", [])] + ["--metrics-port=0"]
                else:
                    c["args"] = [local(str(a)) for a in c.get("args", [])]
                proc = self._container(render, pod, c, volumes, podir, ports=mine)
                assert not isinstance(proc, list), proc
                procs.append((doc["metadata"]["name"], proc, c, mine))
            deadline = time.monotonic() + ready_s
            for name_, proc, c, mine in procs:
                named = {p["name"]: mine[p["containerPort"]] for p in c.get("ports", []) if "name" in p}
                while True:
                    if c["image"] == "audiolime-tagger:stand-in":
                        ok = run_probe({"tcpSocket": {"port": "grpc"}}, named, None)[0]
                    else:
                        ok = run_probe(c["readinessProbe"], {**mine, **named}, lambda argv, t: self._exec(argv, t))[0]
                    if ok:
                        break
                    assert proc.poll() is None, f"{name_} exited with {proc.returncode}"
                    assert time.monotonic() < deadline, f"{name_} not ready after {ready_s} s"
                    time.sleep(0.5)
            yield Stack(render, addresses, {n: p for n, p, _, _ in procs})
        finally:
            for _, proc, _, _ in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def _volumes(self, render: Render, pod: dict, podir: Path) -> dict[str, Path]:
        volumes: dict[str, Path] = {}
        for vol in pod.get("volumes", []):
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                volumes[vol["name"]] = render.claims.setdefault(
                    claim, Path(tempfile.mkdtemp(prefix=f"claim-{claim}-", dir=self.workdir)))
            else:
                volumes[vol["name"]] = podir / "volumes" / vol["name"]
                volumes[vol["name"]].mkdir(parents=True, exist_ok=True)
        return volumes

    # .. the official TF Serving container ............................................................
    def _check_tfserving(self, render: Render, pod: dict, c: dict, volumes: dict[str, Path]) -> list[str]:
        tag = TFSERVING_IMAGE.search(c["image"]).group(1)
        version = (re.match(r"\d+\.\d+\.\d+", tag) or [None])[0]
        release = self.table.get(version)
        if release is None:
            return [f"tensorflow/serving:{tag}: not a release in deploy/tfserving-versions.json "
                    f"({', '.join(self.table)}); add it with scripts/tfserving_versions.py"]
        findings = []
        if c.get("command") != [release["image"]["binary"]]:
            findings.append(f"command must be [{release['image']['binary']}]: the image's entrypoint script adds "
                            "--model_name/--model_base_path")
        flags: dict[str, str] = {}
        for arg in c.get("args", []):
            m = re.fullmatch(r"--([A-Za-z0-9_]+)(?:=(.*))?", arg)
            if not m:
                findings.append(f"argument {arg!r} is not a --flag")
                continue
            flags[m.group(1)] = m.group(2) if m.group(2) is not None else "true"
            if m.group(1) not in release["flags"]:
                findings.append(f"TF Serving {version} has no flag --{m.group(1)} (main.cc)")
        by_name = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        grpc_port, rest_port = int(flags.get("port", 8500)), int(flags.get("rest_api_port", 0))
        if by_name.get("grpc") != grpc_port:
            findings.append(f"--port={grpc_port} is not the containerPort named grpc ({by_name.get('grpc')})")
        mapping, problems = self._mounts(render, pod, c, volumes)
        findings += problems
        models = []
        for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
            if flag in flags and not Path(map_paths(flags[flag], mapping)).is_file():
                findings.append(f"--{flag}={flags[flag]} is no file in the container's mounts")
        if "model_config_file" in flags and Path(map_paths(flags["model_config_file"], mapping)).is_file():
            config = Path(map_paths(flags["model_config_file"], mapping)).read_text()
            for name, base in re.findall(r'name:\s*"([^"]+)"\s*base_path:\s*"([^"]+)"', config):
                models.append(name)
                versions = [d for d in Path(base).glob("*") if d.name.isdigit() and (d / "saved_model.pb").is_file()]
                if not Path(base).is_absolute() or not versions:
                    findings.append(f"model {name}: no <version>/saved_model.pb under {base}: TF Serving waits for "
                                    "every configured model and would never open its ports")
        if "ssl_config_file" in flags:
            findings += check_ssl_config(Path(map_paths(flags["ssl_config_file"], mapping)), flags["ssl_config_file"])
        health = release["grpc_health"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            if probe is None:
                if kind != "startupProbe":
                    findings.append(f"no {kind}")
                continue
            if "grpc" in probe:
                if "ssl_config_file" in flags:
                    findings.append(f"{kind}: gRPC probe on TF Serving's TLS port (--ssl_config_file): the kubelet's "
                                    "gRPC probes speak plaintext and can never pass")
                    continue
                if not health["supported"]:
                    findings.append(f"{kind}: TF Serving {version} has no grpc.health.v1 service (server.cc; "
                                    "added in 2.15), the probe can never pass")
                    continue
                if flags.get(health["flag"], "false").lower() not in ("true", "1"):
                    findings.append(f"{kind}: the health service is off: --{health['flag']}=true is not set")
                if probe["grpc"].get("service", "") not in health["services"]:
                    findings.append(f"{kind}: service {probe['grpc'].get('service')!r} is not one TF Serving "
                                    f"registers ({health['services']})")
                if probe["grpc"]["port"] not in (grpc_port, "grpc"):
                    findings.append(f"{kind}: gRPC probe port {probe['grpc']['port']} is not --port")
            elif "httpGet" in probe:
                port = probe["httpGet"]["port"]
                if (by_name.get(port) if isinstance(port, str) else port) != rest_port or not rest_port:
                    findings.append(f"{kind}: HTTP probe port {port} is not --rest_api_port ({rest_port or 'off'})")
                m = re.fullmatch(r"/v1/models/([^/]+)(/metadata)?", probe["httpGet"].get("path", ""))
                if not m or m.group(1) not in models:
                    findings.append(f"{kind}: path {probe['httpGet'].get('path')} is no configured model's endpoint")
                elif kind != "livenessProbe" and not (m.group(2) and release["rest"]["metadata_needs_available_version"]):
                    findings.append(f"{kind}: {probe['httpGet']['path']} answers 200 while the model is still LOADING "
                                    "(get_model_status_impl.cc); use /v1/models/<name>/metadata")
            elif "exec" in probe:
                findings.append(f"{kind}: exec probe, but the image has only {release['image']['apt_packages']} "
                                "on top of the base (no curl or wget)")
        hook = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        if hook and hook[0] not in ("sleep", "/bin/sleep"):
            findings.append(f"preStop {hook}: only coreutils are in the image")
        return findings


# -- cert-manager and TF Serving's SSLConfig -------------------------------------------------------
def _secret_doc(name: str, files: dict[str, bytes]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": name},
            "data": {k: base64.b64encode(v).decode() for k, v in files.items()}}


def issue_certificates(render: Render, workdir: Path) -> list[str]:
    """cert-manager stand-in: every ``Certificate`` of the render becomes the Secret it names
    (tls.crt, tls.key, ca.crt), issued by a self-signed CA for a CA Certificate and by that CA
    for certificates of a CA Issuer; findings for what cert-manager would not issue."""
    from audiolime.certs import Authority

    certificates = [d for d in render.docs if d["kind"] == "Certificate" and d["apiVersion"] == "cert-manager.io/v1"]
    if not certificates:
        return []
    issuers = {d["metadata"]["name"]: d["spec"] for d in render.docs if d["kind"] in ("Issuer", "ClusterIssuer")}
    authorities: dict[str, Authority] = {}  # CA Secret name -> its authority
    findings = []
    directory = Path(tempfile.mkdtemp(prefix=f"cert-manager-{re.sub(r'[^a-z0-9]+', '-', render.name.lower())}-",
                                      dir=workdir))
    for cert in sorted(certificates, key=lambda c: not c["spec"].get("isCA")):
        spec, name = cert["spec"], cert["metadata"]["name"]
        issuer = issuers.get(spec["issuerRef"]["name"])
        if spec.get("isCA"):
            if issuer is None or "selfSigned" not in issuer:
                findings.append(f"Certificate/{name}: a CA certificate needs a selfSigned issuer here")
                continue
            ca = authorities[spec["secretName"]] = Authority(directory / spec["secretName"], name)
            pem = ca.cert.read_bytes()
            render.docs.append(_secret_doc(spec["secretName"], {"tls.crt": pem, "tls.key": (ca.directory / "ca.key")
                                                                .read_bytes(), "ca.crt": pem}))
            continue
        if issuer is None:  # the operator's issuer (issuerRef): some CA of theirs
            key = f"external:{spec['issuerRef']['name']}"
            if key not in authorities:
                authorities[key] = Authority(directory / spec["issuerRef"]["name"], spec["issuerRef"]["name"])
            ca = authorities[key]
        elif "ca" in issuer and issuer["ca"]["secretName"] in authorities:
            ca = authorities[issuer["ca"]["secretName"]]
        else:
            findings.append(f"Certificate/{name}: issuer {spec['issuerRef']['name']} issues nothing here")
            continue
        usages = tuple(role for role in ("server", "client") if f"{role} auth" in spec.get("usages", []))
        if not usages:
            findings.append(f"Certificate/{name}: usages {spec.get('usages')} name neither server auth nor client auth")
            continue
        # its common name (else the object's name), names and usages: TLS peers refuse it in another role
        pair = ca.issue(spec.get("commonName") or name, tuple(spec.get("dnsNames", [])) +
                        tuple(spec.get("ipAddresses", [])), usages=usages)
        render.docs.append(_secret_doc(spec["secretName"], {"tls.crt": pair.cert.read_bytes(),
                                                            "tls.key": pair.key.read_bytes(),
                                                            "ca.crt": ca.cert.read_bytes()}))
    return findings


def check_ssl_config(path: Path, shown: str) -> list[str]:
    """TF Serving's ``--ssl_config_file`` as it reads it: an SSLConfig text proto whose key and
    certificate belong together, signed by ``custom_ca``, with client certificates required."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    from audiolime.errors import InvalidInput
    from audiolime.tagger.config import ConfigError, load_ssl_config
    from audiolime.tls import check_pair

    if not path.is_file():
        return [f"--ssl_config_file={shown} is no file in the container's mounts"]
    try:
        config = load_ssl_config(path)
        check_pair(config.server_cert.encode(), config.server_key.encode(), f"--ssl_config_file={shown}")
        cert = x509.load_pem_x509_certificate(config.server_cert.encode())
        ca = x509.load_pem_x509_certificate(config.custom_ca.encode())
    except (ConfigError, InvalidInput, ValueError, TypeError) as exc:
        return [f"--ssl_config_file={shown}: {exc}"]
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        return [f"--ssl_config_file={shown}: server_cert is not signed by custom_ca ({exc or 'bad signature'})"]
    return [] if config.client_verify else [f"--ssl_config_file={shown}: client_verify is off (no mTLS)"]


def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Stack:
    """What :meth:`Kubelet.serve` runs: the render (with issued Secrets), Service addresses, processes."""

    render: Render
    addresses: dict[str, str]
    processes: dict[str, subprocess.Popen]

    def address(self, service: str, port: int) -> str:
        return self.addresses[f"{service}:{port}"]

    def secret(self, name: str) -> dict[str, str]:
        doc = self.render.find("Secret", name)
        assert doc is not None, f"Secret {name} is not rendered"
        return {k: _b64(v) for k, v in (doc.get("data") or {}).items()}
