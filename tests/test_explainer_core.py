"""The explainer service's core in-process, with a fake tagger and a fake separator behind the
same protocols as the remote ones: publishing, events, request context in worker threads,
validation before work, the retry policy. No TensorFlow, no servers. (Jobs: tests/test_jobs.py.)"""

from __future__ import annotations

import json
import re

import grpc
import pytest

from audiolime import errors
from audiolime.explain import surrogate
from audiolime.explain.limits import Limits
from audiolime.explainer.remote import RetryPolicy
from audiolime.explainer.service import ExplainerService, ServiceConfig
from audiolime.server import context as callctx
from audiolime.store import LocalStore
from conftest import FakeSeparator, FakeTagger
from conftest import fake_job as job


@pytest.fixture()
def core(tmp_path):
    store = LocalStore(tmp_path / "store", public_url="http://127.0.0.1:9/", secret=b"k")
    tagger = FakeTagger()
    service = ExplainerService(store, lambda name, version: tagger, FakeSeparator(),
                               ServiceConfig(batch_size=16, max_in_flight=4, limits=Limits(max_bytes=10 ** 7)))
    return service, tagger, store


def test_publishes_artifacts_then_manifest_with_urls(core):
    """Explain writes every artifact and explanation.json under the explanation's prefix; the stored
    manifest is the outcome's document; every artifact has a presigned URL."""
    service, _, store = core
    outcome = service.explain(job())
    prefix = store.root / "explanations" / outcome.explanation_id
    stored = json.loads((prefix / "explanation.json").read_text())
    assert stored == {**outcome.document.to_json(), "timings_s": stored["timings_s"]}
    names = sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*.wav"))
    assert names == sorted(outcome.urls) and len(names) == 1 + 2 + 2 + 2  # window, stems, top-2, top-k mix, rest
    assert all(u.startswith("http://127.0.0.1:9/o/explanations/") and "sig=" in u for u in outcome.urls.values())
    assert outcome.report_url.startswith("http://127.0.0.1:9/o/explanations/") and "explanation.html" in outcome.report_url
    report = (prefix / "explanation.html").read_text()  # published: it plays the presigned URLs
    assert set(re.findall(r'<audio id="[^"]+" controls preload="metadata" src="([^"]+)"', report)) == \
        {u.replace("&", "&amp;") for u in outcome.urls.values()}
    published = outcome.published()
    assert published.audio.window_file == outcome.urls["window.wav"]
    assert [c.file for c in published.targets[0].components[:2]] == [outcome.urls[c.file] for c in
                                                                     outcome.document.targets[0].components[:2]]
    assert "store" in outcome.document.timings_s


def test_events_follow_the_stages_in_order(core):
    """The core announces each stage itself, in order; predict counts up to the unique masks."""
    service, _, _ = core
    events = []
    outcome = service.explain(job(), events.append)
    stages = [e.stage for e in events]
    firsts = list(dict.fromkeys(stages))
    assert firsts == ["decode", "scan", "separate", "predict", "fit", "fidelity", "store"]
    done = [e.done for e in events if e.stage == "predict"]
    assert done == sorted(done) and done[-1] == outcome.document.unique_samples
    assert {e.total for e in events if e.stage == "predict"} == {outcome.document.unique_samples}


def test_adaptive_rounds_stream_as_events_and_reach_the_proto(core):
    """Adaptive sampling (num_samples 0): each round is a run of predict events with a larger total;
    the document and the gRPC Explanation carry the stopping rule, the edges, the sampling and every
    target's faithfulness (drop-top-k, curves over d'+1 points, stability) and its cost."""
    from audiolime import wire
    from audiolime.explainer.convert import outcome_to_proto

    service, _, _ = core
    events = []
    outcome = service.explain(job(num_samples=0, max_samples=200, top_k=2, segments=5), events.append)
    doc = outcome.document
    totals = [e.total for e in events if e.stage == "predict"]
    assert totals == sorted(totals) and len(set(totals)) == doc.stopping.rounds >= 1
    assert doc.stopping.reason in ("stable", "max_samples") and doc.stopping.masks == doc.num_samples <= 200
    assert doc.sampling.num_samples == 0 and doc.sampling.max_samples == 200 and doc.edges.mode == "fade"
    f = doc.targets[0].faithfulness
    assert len(f.deletion.probabilities) == len(f.insertion.probabilities) == doc.num_components + 1 == 11
    assert f.drop_top_k.components == doc.targets[0].fidelity.components and 0 <= f.stability <= 1
    assert doc.faithfulness_cost.tagger_calls > 0 and doc.faithfulness_cost.seconds >= 0
    pb = outcome_to_proto(outcome)
    assert (pb.stopping.rounds, pb.stopping.reason) == (doc.stopping.rounds, doc.stopping.reason)
    assert pb.edges.mode == "fade" and pb.edges.fade_s == doc.edges.fade_s and pb.sampling.kernel == "lime"
    assert pb.sampling.tie_tolerance == doc.sampling.tie_tolerance == surrogate.TIE > 0
    tf = pb.targets[0].faithfulness
    assert list(tf.deletion.probabilities) == list(f.deletion.probabilities) and tf.insertion.auc == f.insertion.auc
    assert list(tf.drop_top_k.components) == list(f.drop_top_k.components) and tf.stability == f.stability
    assert pb.faithfulness_cost.tagger_calls == doc.faithfulness_cost.tagger_calls
    req = job(num_samples=0, edges="hard", kernel="shap", sampling="independent", curves="off", fade=0.3,
              max_samples=999, stability=0.9).request
    back, _, _ = wire.request_from_proto(wire.request_to_proto(req, wire.AudioSource(content=b"x")))
    assert back == req


def test_version_1_documents_still_read_and_print(core):
    """A document written before the faithfulness fields reads back (new fields None) and prints."""
    from rich.console import Console

    from audiolime.explain.document import Document
    from audiolime.report.terminal import print_document

    service, _, _ = core
    d = service.explain(job(curves="off")).document.to_json()
    assert Document.from_json(d).targets[0].faithfulness.deletion is None  # curves off: no curve
    old = {k: v for k, v in d.items() if k not in ("edges", "sampling", "stopping", "faithfulness_cost")}
    old["version"] = 1
    old["targets"] = [{k: v for k, v in t.items() if k != "faithfulness"} for t in d["targets"]]
    doc = Document.from_json(old)
    assert doc.stopping is None and doc.targets[0].faithfulness is None and doc.to_json()["stopping"] is None
    console = Console(record=True, width=120)
    print_document(old, console)
    text = console.export_text()
    assert "keep top-2" in text and "drop top" not in text
    console = Console(record=True, width=120)
    print_document(d, console)
    text = console.export_text()
    assert "drop top-2" in text and "curves:" not in text and "stability" in text and "fixed N" in text


def test_request_id_reaches_every_tagger_call_from_worker_threads(core):
    """Tagger batches run on a thread pool, yet every call carries the caller's request id."""
    service, tagger, _ = core
    token = callctx.set_request_id("req-42")
    try:
        service.explain(job(num_samples=300))
    finally:
        callctx.reset_request_id(token)
    assert len(tagger.calls) > 4 and {rid for _, rid in tagger.calls} == {"req-42"}


@pytest.mark.parametrize("change,error,needle", [
    (dict(num_samples=3), errors.InvalidInput, "num_samples must be between d'+1 = 9"),
    (dict(top_k=0), errors.InvalidInput, "top_k must be >= 1"),
    (dict(seed=-5), errors.InvalidInput, "seed must be between 0"),
    (dict(separator="7stems"), errors.ModelNotFound, "unknown separator model '7stems'"),
    (dict(tags=("vioce",)), errors.InvalidInput, "closest valid tags: voice"),
    (dict(segments=100, num_samples=2000), errors.InvalidInput, "minimum is 50 ms"),
    (dict(window_start_s=99.0), errors.InvalidInput, "outside the audio"),
])
def test_bad_requests_fail_before_separation_or_masks(core, change, error, needle):
    """Checks run before any separation or mask is evaluated, and name the field."""
    service, tagger, store = core
    with pytest.raises(error, match=re.escape(needle)):
        service.explain(job(**change))
    assert service.separator.requests == 0 and len(tagger.calls) == 0
    assert not (store.root / "explanations").exists()


def test_a_failure_mid_explanation_leaves_nothing(tmp_path):
    """A tagger that gives up after a few batches fails the request; nothing is left in the store."""
    store = LocalStore(tmp_path / "store", public_url="http://127.0.0.1:9/", secret=b"k")
    tagger = FakeTagger(fail_after=5)
    service = ExplainerService(store, lambda n, v: tagger, FakeSeparator(), ServiceConfig(batch_size=16))
    with pytest.raises(errors.Unavailable):
        service.explain(job())
    assert not [p for p in store.root.rglob("*") if p.is_file()]


def test_a_sink_that_cancels_stops_at_the_next_batch(core):
    """An event sink that raises (a caller gone away) stops the explanation: few batches run."""
    service, tagger, _ = core

    def sink(event):
        if event.stage == "predict" and event.done >= 32:
            raise errors.Cancelled("the caller cancelled")

    with pytest.raises(errors.Cancelled):
        service.explain(job(num_samples=2000), sink)
    masks = sum(n for n, _ in tagger.calls)
    assert masks < 200  # of ~2000: batches in flight finish, no new ones start


class _Rpc(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "boom"


def test_retry_policy_retries_transient_codes_within_budget_and_deadline():
    """UNAVAILABLE is retried, INVALID_ARGUMENT is not; an exhausted budget is Unavailable; a passed
    caller deadline stops retrying; every attempt carries the request id."""
    policy = RetryPolicy(timeout_s=5, retries=3, backoff_s=0.001, backoff_cap_s=0.002)
    seen = []

    def flaky(req, timeout, metadata):
        seen.append((timeout, metadata))
        if len(seen) < 3:
            raise _Rpc(grpc.StatusCode.UNAVAILABLE)
        return "ok"

    token = callctx.set_request_id("rid-7")
    try:
        assert policy.call(flaky, None, "x") == "ok" and len(seen) == 3
        assert all(m == (("x-request-id", "rid-7"),) for _, m in seen)
    finally:
        callctx.reset_request_id(token)
    with pytest.raises(_Rpc):
        policy.call(lambda r, timeout, metadata: (_ for _ in ()).throw(_Rpc(grpc.StatusCode.INVALID_ARGUMENT)),
                    None, "x")
    calls = []

    def down(req, timeout, metadata):
        calls.append(1)
        raise _Rpc(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(errors.Unavailable, match="after 4 attempts"):
        policy.call(down, None, "x")
    assert len(calls) == 4
    token = callctx.set_deadline(0.5)
    try:
        seen.clear()
        policy.call(lambda r, timeout, metadata: seen.append(timeout), None, "x")
        assert seen[0] <= 0.5  # never longer than the caller's deadline
    finally:
        callctx.reset_deadline(token)
    token = callctx.set_deadline(-1)
    try:
        with pytest.raises(errors.DeadlineExceeded):
            policy.call(down, None, "x")
    finally:
        callctx.reset_deadline(token)
