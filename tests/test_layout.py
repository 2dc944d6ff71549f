"""The shape of the code: the method imports and runs on numpy and scikit-learn alone, nothing
imports in a cycle, and the service doors do without the paper's evaluation."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, shared_dir

PURE = """
import sys
for name in ("grpc", "google.protobuf", "tensorflow", "soundfile", "soxr", "boto3", "botocore", "librosa",
             "rich", "torch", "prometheus_client", "jinja2", "audiolime.server", "audiolime.evaluation"):
    sys.modules[name] = None  # any import of these now fails
import numpy as np
from audiolime.explain import (artifacts, document, engine, events, factorization, pipeline, request, sampling,
                               signal, stems, surrogate)

class Tagger:
    name, version, labels, sample_rate, window_samples = "t", 1, ["a", "b"], 44100, 22050
    def predict(self, x):
        e = np.sqrt(np.mean(x[:, :11025] ** 2, axis=1))
        return np.stack([np.tanh(4 * e), 1 - np.tanh(4 * e)], axis=1).astype(np.float32)

t = np.arange(44100) / 44100
audio = signal.Audio(np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)]).astype(np.float32) * 0.3,
                     44100)
source = stems.LocalSeparation(lambda w: {"vocals": w[:1].repeat(2, 0) * 0, "accompaniment": w}, "fake")
req = request.ExplainRequest(model="t", tags=("a",), segments=2, num_samples=64).validate()
result = pipeline.explain_song(audio, "tone", req, Tagger(), source, engine.Engine(Tagger().predict, ["a", "b"]))
doc = document.describe(result)
assert document.Document.from_json(doc.to_json()) == doc
print("ok", doc.num_samples, doc.targets[0].components[0].source)
"""


def test_the_method_runs_on_numpy_and_scikit_learn_alone():
    """audiolime.explain imports and explains with gRPC, protobuf, TensorFlow, soundfile, soxr, boto3
    and the server plumbing all unimportable."""
    proc = subprocess.run([sys.executable, "-c", PURE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok 16 accompaniment")  # 2^4 masks <= N: enumerated exactly


def test_no_import_cycles():
    """No module imports (directly, lazily or through others) a module that imports it back."""
    tool = shared_dir() / "tools" / "import_cycles.py"
    assert tool.is_file(), f"{tool} is missing (set AUDIOLIME_SHARED)"
    proc = subprocess.run([sys.executable, str(tool), "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cycle:" not in proc.stdout, proc.stdout
    assert " 0 import cycles" in proc.stdout, proc.stdout


DOORS = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.startswith("audiolime.evaluation") else real(name, *a)
sys.modules["audiolime.evaluation"] = None  # as in the service images, which do not ship it
from audiolime.cli import build_parser
parser = build_parser()
import audiolime.client, audiolime.explainer.server
print(" ".join(sorted(parser._subparsers._group_actions[0].choices)))
"""


def test_service_doors_work_without_the_evaluation():
    """The CLI and the explainer service import without audiolime.evaluation; only `evaluate` goes."""
    proc = subprocess.run([sys.executable, "-c", DOORS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["demo", "explain", "report", "serve", "setup", "up"]


def test_nothing_outside_tests_imports_test_code():
    """Reference models used to check the exports live under tests/ and stay there."""
    offenders = [p for root in ("src", "services") for p in (REPO / root).rglob("*.py")
                 if "from reference" in p.read_text() or "import reference" in p.read_text()]
    assert not offenders


def test_the_client_and_the_report_do_without_scikit_learn():
    """Reading a result (client, document, report page) needs no scikit-learn: the document's
    records and their defaults come from the request model, not from the surrogate."""
    code = ("import sys\nsys.modules['sklearn'] = None\nsys.modules['threadpoolctl'] = None\n"
            "import audiolime.client, audiolime.report.page, audiolime.report.terminal, audiolime.wire\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
