"""The alert rules, run by Prometheus' own rule engine: ``promtool test rules`` (Debian's
``prometheus`` package) on synthetic series, for the chart's PrometheusRule (both taggers) and the
plain rules file generated from it (deploy/prometheus/). Every scenario says which alerts fire
and, as important, which do not.

Histogram series are built from observations with the buckets the services really export
(``audiolime.server.metrics``), so a bucket layout that cannot resolve a threshold fails here.
Thresholds are the chart's defaults, checked against docs/capacity.md's table.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from prometheus_client.utils import floatToGoString

from audiolime import errors
from audiolime.server import metrics
from conftest import CHART, NAMESPACE, REPO, run_cmd

pytestmark = pytest.mark.slow  # promtool and helm

PLAIN_RULES = REPO / "deploy" / "prometheus" / "audiolime.rules.yml"
DASHBOARD = CHART / "dashboards" / "audiolime.json"
RUNBOOKS = REPO / "docs" / "runbooks.md"
MINUTES = 60  # length of every input series (one sample a minute)
EVAL = "45m"  # past every `for:` plus the rate window
FAULTS = "|".join(errors.SERVER_FAULTS)
POD = {"namespace": NAMESPACE, "instance": "10.0.0.7:9090"}


def _selector(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def counter(name: str, labels: dict[str, str], per_minute: float) -> dict:
    return {"series": _selector(name, labels), "values": f"0+{per_minute:g}x{MINUTES}"}


def histogram(name: str, labels: dict[str, str], per_minute: list[float], buckets=metrics.LATENCY_BUCKETS,
              scale: float = 1.0) -> list[dict]:
    """The _bucket/_count/_sum series of ``per_minute`` observations every minute (``scale``: TF
    Serving's microseconds)."""
    out = []
    for bound in [*buckets, math.inf]:
        le = floatToGoString(bound * scale if bound != math.inf else bound)
        out.append(counter(f"{name}_bucket", {**labels, "le": le}, sum(o <= bound for o in per_minute)))
    out.append(counter(f"{name}_count", labels, len(per_minute)))
    out.append(counter(f"{name}_sum", labels, sum(per_minute) * scale))
    return out


def calls(service: str, method: str, code: str, per_minute: list[float], kind: str = "unary",
          job: str = "audiolime-explainer") -> list[dict]:
    """What our services export for ``per_minute`` calls a minute of the given durations."""
    labels = {**POD, "job": job, "grpc_type": kind, "grpc_service": service, "grpc_method": method, "grpc_code": code}
    return [counter("grpc_server_handled_total", labels, len(per_minute)),
            *histogram("grpc_server_handling_seconds", labels, per_minute)]


EXPLAINER, SEPARATOR, PREDICTION = "audiolime.v1.Explainer", "audiolime.v1.Separator", "tensorflow.serving.PredictionService"
POLLS = calls(EXPLAINER, "GetExplanation", "OK", [0.004] * 200)  # a client polling a job about every 0.3 s


@dataclass
class Scenario:
    name: str
    series: list[dict]
    fires: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # alert -> its labels ([] = silent)


OURS = [
    Scenario("200 polls a minute and one 300 s Explain a minute: the slow explanations page",
             POLLS + calls(EXPLAINER, "Explain", "OK", [300.0]),
             {"AudiolimeExplainerHighLatency": [{"severity": "warning", "grpc_method": "Explain"}],
              "AudiolimeHighErrorRatio": []}),
    Scenario("a slow stream is seen per method, next to fast unary calls",
             POLLS + calls(EXPLAINER, "Explain", "OK", [30.0] * 5)
             + calls(EXPLAINER, "ExplainStream", "OK", [280.0], kind="server_stream"),
             {"AudiolimeExplainerHighLatency": [{"severity": "warning", "grpc_method": "ExplainStream"}]}),
    Scenario("polls and explanations within the capacity model's latency: silent",
             POLLS + calls(EXPLAINER, "Explain", "OK", [25.0, 60.0, 130.0]),
             {"AudiolimeExplainerHighLatency": [], "AudiolimeHighErrorRatio": []}),
    Scenario("slow failures do not count as slow explanations (OK only) but as server faults",
             calls(EXPLAINER, "Explain", "OK", [40.0] * 4) + calls(EXPLAINER, "Explain", "DEADLINE_EXCEEDED", [600.0]),
             {"AudiolimeExplainerHighLatency": [],
              "AudiolimeHighErrorRatio": [{"severity": "critical", "grpc_service": EXPLAINER}]}),
    Scenario("a burst of caller mistakes (30 % INVALID_ARGUMENT, RESOURCE_EXHAUSTED) does not page",
             calls(EXPLAINER, "Explain", "OK", [40.0] * 7) + calls(EXPLAINER, "Explain", "INVALID_ARGUMENT", [0.002] * 2)
             + calls(EXPLAINER, "Explain", "RESOURCE_EXHAUSTED", [0.001]),
             {"AudiolimeHighErrorRatio": [], "AudiolimeExplainerHighLatency": []}),
    Scenario("10 % INTERNAL on the separator pages for that service only",
             calls(SEPARATOR, "Separate", "OK", [4.0] * 9, job="audiolime-separator")
             + calls(SEPARATOR, "Separate", "INTERNAL", [0.1], job="audiolime-separator")
             + calls(EXPLAINER, "Explain", "OK", [40.0] * 2),
             {"AudiolimeHighErrorRatio": [{"severity": "critical", "grpc_service": SEPARATOR}],
              "AudiolimeSeparatorHighLatency": []}),
    Scenario("separations slower than twice the longest song's",
             calls(SEPARATOR, "Separate", "OK", [200.0, 4.0], job="audiolime-separator"),
             {"AudiolimeSeparatorHighLatency": [{"severity": "warning"}]}),
    Scenario("our tagger: slow Predict and long batching queues page, fast ones do not",
             calls(PREDICTION, "Predict", "OK", [3.5] * 20, job="audiolime-tagger")
             + histogram("audiolime_tagger_queue_delay_seconds", {**POD, "job": "audiolime-tagger", "model": "musicnn-msd"},
                         [6.0] * 20, buckets=metrics.QUEUE_BUCKETS),
             {"AudiolimeTaggerHighLatency": [{"severity": "warning"}],
              "AudiolimeTaggerQueueDelayHigh": [{"severity": "warning", "model": "musicnn-msd"}]}),
    Scenario("our tagger at the capacity model's batch time: silent",
             calls(PREDICTION, "Predict", "OK", [0.9] * 60, job="audiolime-tagger")
             + histogram("audiolime_tagger_queue_delay_seconds", {**POD, "job": "audiolime-tagger", "model": "musicnn-msd"},
                         [0.05] * 50 + [0.9] * 10, buckets=metrics.QUEUE_BUCKETS),
             {"AudiolimeTaggerHighLatency": [], "AudiolimeTaggerQueueDelayHigh": []}),
    Scenario("a metrics endpoint down",
             [{"series": _selector("up", {**POD, "job": "audiolime-tagger"}), "values": f"0x{MINUTES}"},
              {"series": _selector("up", {**POD, "job": "audiolime-explainer", "instance": "10.0.0.8:9090"}),
               "values": f"1x{MINUTES}"}],
             {"AudiolimeTargetDown": [{"severity": "warning", **POD, "job": "audiolime-tagger"}]}),
]

TF_SERVING = [
    Scenario("TF Serving: caller errors do not page, server faults do",
             [counter(":tensorflow:serving:request_count", {**POD, "model_name": "musicnn-msd", "status": "OK"}, 70),
              counter(":tensorflow:serving:request_count", {**POD, "model_name": "musicnn-msd", "status": "INVALID_ARGUMENT"}, 30),
              counter(":tensorflow:serving:request_count", {**POD, "model_name": "fcn-msd", "status": "OK"}, 80),
              counter(":tensorflow:serving:request_count", {**POD, "model_name": "fcn-msd", "status": "INTERNAL"}, 20)],
             {"AudiolimeTaggerHighErrorRatio": [{"severity": "critical", "model_name": "fcn-msd"}]}),
    Scenario("TF Serving: queue delay and latency in microseconds",
             histogram(":tensorflow:serving:batching_session:queuing_latency", {**POD, "thread_pool_name": "p"},
                       [3.0] * 10, buckets=(0.01, 0.1, 1, 2.5, 5, 10), scale=1e6)
             + histogram(":tensorflow:serving:request_latency", {**POD, "model_name": "musicnn-msd", "API": "predict",
                                                                  "entrypoint": "GRPC"},
                         [0.5] * 10, buckets=(0.1, 0.25, 0.5, 1, 2.5, 5), scale=1e6),
             {"AudiolimeTaggerQueueDelayHigh": [{"severity": "warning"}], "AudiolimeTaggerHighLatency": []}),
    Scenario("kube-state-metrics: a deployment with unavailable replicas",
             [{"series": _selector("kube_deployment_status_replicas_unavailable",
                                   {"namespace": NAMESPACE, "deployment": "audiolime-tagger"}), "values": f"1x{MINUTES}"},
              {"series": _selector("kube_deployment_status_replicas_unavailable",
                                   {"namespace": "elsewhere", "deployment": "audiolime-tagger"}), "values": f"1x{MINUTES}"}],
             {"AudiolimePodsNotReady": [{"severity": "warning", "namespace": NAMESPACE, "deployment": "audiolime-tagger"}]}),
]


def _rules_without_annotations(groups: list[dict], path: Path) -> Path:
    """The rules as they are, minus annotations (checked separately: promtool would compare their
    rendered text, values included)."""
    groups = json.loads(json.dumps(groups))
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def run_promtool(promtool: str, groups: list[dict], scenarios: list[Scenario], tmp_path: Path) -> None:
    rules = _rules_without_annotations(groups, tmp_path / "rules.yml")
    tests = []
    for scenario in scenarios:
        checks = [{"eval_time": EVAL, "alertname": alert,
                   "exp_alerts": [{"exp_labels": labels} for labels in fired]}
                  for alert, fired in scenario.fires.items()]
        tests.append({"name": scenario.name, "interval": "1m", "input_series": scenario.series,
                      "alert_rule_test": checks})
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests},
                                   sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _chart_groups(helm_template, *sets: str) -> list[dict]:
    docs = helm_template("production-values", *sets)
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    return rule["spec"]["groups"]


def _plain_groups() -> list[dict]:
    return yaml.safe_load(PLAIN_RULES.read_text())["groups"]


def _alerts(groups: list[dict]) -> dict[str, dict]:
    return {r["alert"]: r for g in groups for r in g["rules"]}


# ---------------------------------------------------------------------------------------------


def test_plain_rules_file_is_generated_from_the_chart(tools, tmp_path, promtool):
    """deploy/prometheus/audiolime.rules.yml is what generate.py renders now, and promtool lints it clean."""
    out = tmp_path / "rules.yml"
    run_cmd([sys.executable, REPO / "deploy" / "prometheus" / "generate.py", "--helm", tools["helm"], "--out", out])
    assert out.read_text() == PLAIN_RULES.read_text(), "run `python deploy/prometheus/generate.py`"
    proc = subprocess.run([promtool, "check", "rules", "--lint=all", str(PLAIN_RULES)], capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    assert "namespace=" not in PLAIN_RULES.read_text()  # outside Kubernetes there is no namespace label


def test_plain_rules_fire_as_specified(promtool, tmp_path):
    """Every scenario of our services against the plain rules file."""
    run_promtool(promtool, _plain_groups(), OURS, tmp_path)


def test_chart_rules_with_our_tagger_fire_as_specified(helm_template, promtool, tmp_path):
    run_promtool(promtool, _chart_groups(helm_template, "tagger.server=audiolime"), OURS, tmp_path)


def test_chart_rules_with_tf_serving_fire_as_specified(helm_template, promtool, tmp_path):
    """The official tagger's branches: its status label, microseconds, and kube-state-metrics."""
    explainer_only = [s for s in OURS if all(a in ("AudiolimeExplainerHighLatency", "AudiolimeHighErrorRatio",
                                                   "AudiolimeSeparatorHighLatency", "AudiolimeTargetDown")
                                             for a in s.fires)]
    run_promtool(promtool, _chart_groups(helm_template), TF_SERVING + explainer_only, tmp_path)


def test_every_alert_has_a_runbook(helm_template):
    """runbook_url on every alert of every variant, pointing at a section of docs/runbooks.md."""
    headings = {m.lower() for m in re.findall(r"^## (\w+)", RUNBOOKS.read_text(), re.M)}
    for groups in (_chart_groups(helm_template), _chart_groups(helm_template, "tagger.server=audiolime"), _plain_groups()):
        for name, rule in _alerts(groups).items():
            url = rule["annotations"]["runbook_url"]
            assert url.endswith(f"/docs/runbooks.md#{name.lower()}"), url
            assert name.lower() in headings, f"docs/runbooks.md has no section for {name}"
            assert rule["annotations"]["summary"]


def test_one_definition_of_a_failure():
    """The alerts (both taggers) and the dashboard's error panel count errors.SERVER_FAULTS, and
    nothing else: the same regular expression everywhere, no `code!="OK"`."""
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert f'$faults := "{FAULTS}"' in template
    dashboard = DASHBOARD.read_text()
    assert '!=\\"OK\\"' not in dashboard and "!=\"OK\"" not in dashboard
    panel = next(p for p in json.loads(dashboard)["panels"] if p["title"].lower().startswith("error ratio"))
    exprs = [t["expr"] for t in panel["targets"]]
    assert exprs and all(f'=~"{FAULTS}"' in e for e in exprs), exprs


def test_dashboard_latency_is_per_method_and_successful_only():
    """The latency panel shows Explain|ExplainStream apart from the polls, OK calls only."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    latency = [t["expr"] for p in panels if "latency" in p["title"].lower() for t in p["targets"]
               if "grpc_server_handling_seconds" in t["expr"]]
    assert latency and all('grpc_code="OK"' in e and "grpc_method" in e for e in latency), latency


def test_dashboard_variables_work_outside_kubernetes():
    """Namespace is a multi-value variable with an all-value matching series without the label."""
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    ns = variables["namespace"]
    assert ns["includeAll"] and ns["allValue"] == ".*"
    assert 'namespace="$namespace"' not in DASHBOARD.read_text()


def test_thresholds_come_from_the_capacity_model():
    """The chart's default thresholds are the numbers of docs/capacity.md's "Alert thresholds"
    table, and each lies inside the exported buckets (with a bucket above it)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["alerts"]
    section = (REPO / "docs" / "capacity.md").read_text().split("## Alert thresholds", 1)[1]
    table = dict(re.findall(r"^\|\s*`([\w.]+)`\s*\|\s*([\d.]+)", section, re.M))
    flat = {"errorRatio": values["errorRatio"], "taggerQueueDelaySeconds": values["taggerQueueDelaySeconds"],
            **{f"p99LatencySeconds.{k}": v for k, v in values["p99LatencySeconds"].items()}}
    assert {k: float(v) for k, v in table.items()} == {k: float(v) for k, v in flat.items()}
    for key, buckets in (("p99LatencySeconds.explainer", metrics.LATENCY_BUCKETS),
                         ("p99LatencySeconds.separator", metrics.LATENCY_BUCKETS),
                         ("p99LatencySeconds.tagger", metrics.LATENCY_BUCKETS),
                         ("taggerQueueDelaySeconds", metrics.QUEUE_BUCKETS)):
        assert buckets[0] < flat[key] and any(b >= 1.25 * flat[key] for b in buckets), key
    assert max(metrics.LATENCY_BUCKETS) >= 600 and max(metrics.QUEUE_BUCKETS) >= 60
