"""The explainer service's core in-process, with a fake tagger and a fake separator behind the
same protocols as the remote ones: publishing, events, request context in worker threads,
validation before work, the API's admission, streams and cancellation, the one schema of the
document and the message, the retry policy. No TensorFlow, no servers. (Jobs: tests/test_jobs.py.)"""

from __future__ import annotations

import json
import re

import grpc
import pytest

from audiolime import errors
from audiolime.explainer.remote import RetryPolicy
from audiolime.explainer.service import ExplainerService, ServiceConfig
from audiolime.inputs import AudioSource
from audiolime.method import surrogate
from audiolime.method.events import Event, Ranking
from audiolime.method.limits import Limits
from audiolime.server import context as callctx
from audiolime.store import LocalStore
from conftest import FakeSeparator, FakeTagger, fake_request
from conftest import fake_task as job


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
    outcome = service.run(job())
    prefix = store.root / "explanations" / outcome.explanation_id
    stored = json.loads((prefix / "explanation.json").read_text())
    assert stored == outcome.document.to_json()  # timings included: final before the manifest was written
    names = sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*.wav"))
    assert names == sorted(outcome.urls) and len(names) == 1 + 2 + 2 + 2  # window, stems, top-2, top-k mix, rest
    assert all(u.startswith("http://127.0.0.1:9/o/explanations/") and "sig=" in u for u in outcome.urls.values())
    assert outcome.report_url.startswith("http://127.0.0.1:9/o/explanations/") and "explanation.html" in outcome.report_url
    report = (prefix / "explanation.html").read_text()  # published: it plays the presigned URLs
    assert set(re.findall(r'<audio id="[^"]+" controls preload="metadata" src="([^"]+)"', report)) == \
        {u.replace("&", "&amp;") for u in outcome.urls.values()}
    published = outcome.with_urls()
    assert published.audio.window_file == outcome.urls["window.wav"]
    assert [c.file for c in published.targets[0].components[:2]] == [outcome.urls[c.file] for c in
                                                                     outcome.document.targets[0].components[:2]]
    assert "store" in outcome.document.timings_s and "decode" in outcome.document.timings_s


def test_events_follow_the_stages_in_order(core):
    """The core announces each stage itself, in order; predict counts up to the unique masks."""
    service, _, _ = core
    events = []
    outcome = service.run(job(), events.append)
    assert all(isinstance(e, Event) for e in events)  # a fixed num_samples has no rounds to rank
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
    from audiolime.explainer.convert import published_to_proto

    service, _, _ = core
    events = []
    outcome = service.run(job(num_samples=0, max_samples=200, top_k=2, segments=5), events.append)
    doc = outcome.document
    totals = [e.total for e in events if isinstance(e, Event) and e.stage == "predict"]
    assert totals == sorted(totals) and len(set(totals)) == doc.stopping.rounds >= 1
    rankings = [e for e in events if isinstance(e, Ranking)]
    assert [r.masks for r in rankings][-1] == doc.num_samples and len(rankings) == doc.stopping.rounds
    last = wire.event_to_proto(rankings[-1]).interim  # the stream's interim message, as a client reads it
    assert last.round == doc.stopping.rounds and [t.tag for t in last.targets] == ["voice"]
    assert [(c.rank, c.name) for c in last.targets[0].top] == [(c.rank, c.name) for c in doc.targets[0].components[:2]]
    assert [c.weight for c in last.targets[0].top] == pytest.approx([c.weight for c in doc.targets[0].components[:2]],
                                                                    abs=1e-6)
    assert last.targets[0].stability == pytest.approx(doc.targets[0].faithfulness.stability)
    # the wire carries weights as the document does (6 decimals)
    assert wire.event_from_proto(wire.event_to_proto(rankings[0])).targets[0].top[0][1] == \
        round(rankings[0].targets[0].top[0][1], 6)
    assert doc.stopping.reason in ("stable", "max_samples") and doc.stopping.masks == doc.num_samples <= 200
    assert doc.sampling.num_samples == 0 and doc.sampling.max_samples == 200 and doc.edges.mode == "fade"
    f = doc.targets[0].faithfulness
    assert len(f.deletion.probabilities) == len(f.insertion.probabilities) == doc.num_components + 1 == 11
    assert f.drop_top_k.components == doc.targets[0].keep_top_k.components and 0 <= f.stability <= 1
    assert doc.faithfulness_cost.tagger_calls > 0 and doc.faithfulness_cost.seconds >= 0
    pb = published_to_proto(outcome)
    assert (pb.stopping.rounds, pb.stopping.reason) == (doc.stopping.rounds, doc.stopping.reason)
    assert pb.edges.mode == "fade" and pb.edges.fade_s == doc.edges.fade_s and pb.sampling.kernel == "lime"
    assert pb.sampling.tie_tolerance == doc.sampling.tie_tolerance == surrogate.TIE > 0
    tf = pb.targets[0].faithfulness
    assert list(tf.deletion.probabilities) == list(f.deletion.probabilities) and tf.insertion.auc == f.insertion.auc
    assert list(tf.drop_top_k.components) == list(f.drop_top_k.components) and tf.stability == f.stability
    assert pb.faithfulness_cost.tagger_calls == doc.faithfulness_cost.tagger_calls
    assert tf.verdict.summary == f.verdict.summary and tf.verdict.random_sets == f.verdict.random_sets == 16
    assert (tf.verdict.sufficient, tf.verdict.necessary) == (f.verdict.sufficient, f.verdict.necessary)
    req = job(num_samples=0, edges="hard", kernel="shap", sampling="independent", curves="off", fade=0.3,
              max_samples=999, stability=0.7).request
    back, _, _ = wire.request_from_proto(wire.request_to_proto(req, AudioSource(content=b"x")))
    assert back == req


def test_version_1_documents_still_read_and_print(core):
    """A document written before the faithfulness fields reads back (new fields None) and prints."""
    from rich.console import Console

    from audiolime.explanation.document import Document
    from audiolime.report.terminal import print_document

    service, _, _ = core
    d = service.run(job(curves="off")).document.to_json()
    assert Document.from_json(d).targets[0].faithfulness.deletion is None  # curves off: no curve
    old = {k: v for k, v in d.items() if k not in ("edges", "sampling", "stopping", "faithfulness_cost")}
    old["version"] = 1
    old["targets"] = [{k: v for k, v in t.items() if k != "faithfulness"} for t in d["targets"]]
    doc = Document.from_json(old)
    assert doc.stopping is None and doc.targets[0].faithfulness is None and doc.to_json()["stopping"] is None
    console = Console(record=True, width=120)
    print_document(old, console)
    text = console.export_text()
    assert "keep top-2" in text and "drop top" not in text and "verdict:" not in text
    console = Console(record=True, width=400)
    print_document(d, console)
    text = console.export_text()
    assert "drop top-2" in text and "curves:" not in text and "fixed N" in text
    assert "Ranking stability (bootstrap)" in text and "top-2 stability" not in text
    assert f"verdict: {d['targets'][0]['faithfulness']['verdict']['summary']}" in text


def test_request_id_reaches_every_tagger_call_from_worker_threads(core):
    """Tagger batches run on a thread pool, yet every call carries the caller's request id."""
    service, tagger, _ = core
    token = callctx.set_request_id("req-42")
    try:
        service.run(job(num_samples=300))
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
        service.run(service.check(*fake_request(**change)))
    assert service.separator.requests == 0 and len(tagger.calls) == 0
    assert not (store.root / "explanations").exists()


def test_a_failure_mid_explanation_leaves_nothing(tmp_path):
    """A tagger that gives up after a few batches fails the request; nothing of it is left in the
    store (the song scan, done before the failure, is kept for the next explanation of the song)."""
    store = LocalStore(tmp_path / "store", public_url="http://127.0.0.1:9/", secret=b"k")
    tagger = FakeTagger(fail_after=5)
    service = ExplainerService(store, lambda n, v: tagger, FakeSeparator(), ServiceConfig(batch_size=16))
    with pytest.raises(errors.Unavailable):
        service.run(job())
    left = [p.relative_to(store.root) for p in store.root.rglob("*") if p.is_file()]
    assert [p.parts[0] for p in left] == ["scans"]


def test_a_sink_that_cancels_stops_at_the_next_batch(core):
    """An event sink that raises (a caller gone away) stops the explanation: few batches run."""
    service, tagger, _ = core

    def sink(event):
        if event.stage == "predict" and event.done >= 32:
            raise errors.Cancelled("the caller cancelled")

    with pytest.raises(errors.Cancelled):
        service.run(job(num_samples=2000), sink)
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


# -- the one schema of the document and the message ------------------------------------------------
def test_the_document_and_the_message_share_one_schema(core):
    """Every record field of the document has its field in the gRPC message and back: a published
    document turned into an Explanation and read back is the same document (URLs for files), and
    no field of those messages is left without a record field (besides the publishing ones)."""
    import dataclasses

    from audiolime import wire
    from audiolime.explainer.convert import published_to_proto
    from audiolime.explanation import document as d
    from audiolime.explanation.schema import wire_names
    from audiolime.v1 import explainer_pb2 as pb2

    service, _, _ = core
    published = service.run(job(tags=("voice", "drums"), num_samples=0, max_samples=256))
    pb = published_to_proto(published)
    assert wire.explanation_from_proto(pb) == published.with_urls()
    pairs = {d.Document: pb2.Explanation, d.AudioRecord: pb2.AudioInfo, d.ModelRecord: pb2.ModelInfo,
             d.SeparatorRecord: pb2.SeparatorInfo, d.TargetRecord: pb2.TargetExplanation,
             d.ComponentRecord: pb2.Component, d.KeepTopKRecord: pb2.Fidelity, d.DropTopKRecord: pb2.DropTopK,
             d.FaithfulnessRecord: pb2.Faithfulness, d.CurveRecord: pb2.RankCurve, d.EdgesRecord: pb2.SegmentEdges,
             d.SamplingRecord: pb2.SamplingInfo, d.StoppingRecord: pb2.Stopping, d.CostRecord: pb2.FaithfulnessCost,
             d.StemRecord: pb2.StemInfo, d.TagProbability: pb2.TagProbability, d.VerdictRecord: pb2.Verdict}
    publishing = {"Explanation": {"explanation_id", "manifest_url", "urls_expire_at", "report_url", "artifact_urls"},
                  "SeparatorInfo": {"cache_hit"}}
    records = {t for t in vars(d).values() if dataclasses.is_dataclass(t)}
    assert records == set(pairs)  # every record has its message
    for record, message in pairs.items():
        fields = set(message.DESCRIPTOR.fields_by_name)
        assert wire_names(record) | publishing.get(message.DESCRIPTOR.name, set()) == fields, record.__name__


# -- the API in-process: admission, streams, cancellation ------------------------------------------
class Caller:
    """A caller that is there until ``leave()`` (a grpc.ServicerContext's is_active)."""

    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


@pytest.fixture()
def api(core, tmp_path):
    from audiolime.explainer.core import ExplainerCore
    from audiolime.explainer.jobs import JobRunner
    from audiolime.explainer.jobstore import JobConfig, JobStore
    from audiolime.server import metrics
    from audiolime.server.admission import Admission

    service, tagger, store = core
    admission = Admission(1, 1, metrics.EXPLANATIONS, "explainer", "explanations")
    runner = JobRunner(JobStore(store, JobConfig(poll_s=0.05, lease_s=5)), service.run, admission, "w")
    api = ExplainerCore(service, runner, admission).start()
    yield api, tagger, store
    tagger.gate.set()
    api.stop()


def test_stream_yields_progress_then_the_result_and_schedules_its_expiry(api):
    """explain_stream: events in stage order, then the published result (last); its deletion is
    scheduled in the store; unary results too."""
    from audiolime.explainer.service import Published

    core_api, _, store = api
    items = list(core_api.explain_stream(job(), Caller()))
    assert isinstance(items[-1], Published) and not any(isinstance(i, Published) for i in items[:-1])
    assert [e.stage for e in items[:-1]][0] == "decode" and items[-2].stage == "store"
    unary = core_api.explain(job(seed=1), Caller())
    markers = [o.key for o in store.list("expiry/")]
    assert [m for m in markers if m.endswith(items[-1].explanation_id)] and \
        [m for m in markers if m.endswith(unary.explanation_id)]


def test_busy_replica_refuses_at_once_and_a_caller_who_leaves_stops_the_explanation(api):
    """One running + one waiting fill the replica (1/1): a third call is RESOURCE_EXHAUSTED before
    any work; the waiting caller who leaves gives up its place (CANCELLED); the running one stops
    at its next batch when its caller leaves."""
    import threading

    core_api, tagger, _ = api
    tagger.hold_after = 2
    running, waiting = Caller(), Caller()
    outcome: dict = {}

    def call(name: str, caller: Caller) -> None:
        try:
            core_api.explain(job(num_samples=2000), caller)
        except errors.AudiolimeError as exc:
            outcome[name] = type(exc).__name__

    threads = [threading.Thread(target=call, args=("running", running))]
    threads[0].start()
    from test_jobs import until

    until(lambda: len(tagger.calls) > 2, what="the first explanation predicting")
    threads.append(threading.Thread(target=call, args=("waiting", waiting)))
    threads[1].start()
    until(lambda: core_api.admission.waiting == 1, what="the second one waiting")
    calls = len(tagger.calls)
    with pytest.raises(errors.ResourceExhausted, match="retry later"):
        core_api.explain(job(), Caller())
    assert len(tagger.calls) == calls
    waiting.active = False
    threads[1].join(10)
    running.active = False
    tagger.gate.set()
    threads[0].join(30)
    assert outcome == {"waiting": "Cancelled", "running": "Cancelled"}
    assert len(tagger.calls) < 2000 / 16 and (core_api.admission.running, core_api.admission.waiting) == (0, 0)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end is the point
def test_a_bug_in_a_background_loop_surfaces_at_once():
    """A step that raises something other than a store outage ends the loop with its traceback and
    the failure is raised to whoever checks it; an outage is retried."""
    import time

    from audiolime.explainer.background import Loop

    calls = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("store unreachable")
        raise KeyError("a bug")

    seen = []
    loop = Loop("test-loop", step, 0.01, on_failure=seen.append).start()
    deadline = time.monotonic() + 10
    while loop.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match="test-loop") as exc:
        loop.check()
    assert isinstance(exc.value.__cause__, KeyError) and len(calls) == 2 and seen == [exc.value.__cause__]
    loop.stop()


def test_the_callers_deadline_stops_sampling_early_and_the_result_is_not_cached(core):
    """Under a gRPC deadline (the call context's), adaptive sampling stops at the last round that
    leaves time for the faithfulness checks and publishing: the caller gets an explanation whose
    stopping reason is "deadline", with its stability, instead of DEADLINE_EXCEEDED; being cut short
    by one caller's deadline, it is not put in the explanation cache. Without a deadline the same
    request runs on and is cached."""
    import contextvars
    import threading
    import time
    import zlib

    import numpy as np

    service, tagger, _ = core
    slow_predict = tagger.predict

    busy = threading.Lock()

    def noisy(x):  # 2 ms a window on one device, and noise per mask: a ranking that never settles
        with busy:
            time.sleep(0.002 * len(x))
        out = slow_predict(x)
        codes = [zlib.crc32(np.asarray(row, np.float32).tobytes()) for row in x]
        out[:, 0] += 0.3 * np.array([np.random.default_rng(c).normal() for c in codes], np.float32)
        return out

    tagger.predict = noisy
    task = job(num_samples=0, max_samples=1024, segments=8, stability=1.0)

    def within(seconds):
        def run():
            token = callctx.set_deadline(seconds)
            try:
                return service.run(task, cached=True)
            finally:
                callctx.reset_deadline(token)
        return contextvars.copy_context().run(run)

    cut = within(2.5)
    stop = cut.document.stopping
    assert stop.reason == "deadline" and stop.masks < 1024 and 0 <= stop.stability < 1
    assert cut.cache_key == "" and cut.document.targets[0].faithfulness.stability == stop.stability
    free = service.run(task, cached=True)
    assert free.document.stopping.reason == "max_samples" and free.cache_key != ""
    # the request's own time budget does the same, with reason "budget"; a budget that does not bind
    # changes nothing, not even the cache key (the same request with any budget hits the full answer)
    budgeted = job(num_samples=0, max_samples=1024, segments=8, stability=1.0, seed=3, time_budget_s=2.5)
    short = service.run(budgeted, cached=True)
    assert short.document.stopping.reason == "budget" and short.document.stopping.masks < 1024
    assert short.cache_key == "" and not short.cache_hit
    roomy = service.run(job(num_samples=0, max_samples=1024, segments=8, stability=1.0, time_budget_s=600), cached=True)
    assert roomy.document.stopping == free.document.stopping and roomy.cache_key == free.cache_key


def test_the_song_scan_is_kept_in_the_store_and_reused(core, monkeypatch):
    """The first explanation of a song scans it and keeps the scan under scans/; the next one (another
    seed) reads it instead of tagging every window, with the same song tags and window; an
    unreadable entry is a miss and is rewritten; another tagger version or batch size is another key."""
    import numpy as np
    from prometheus_client import REGISTRY

    from audiolime.explainer import scans
    from audiolime.method import pipeline

    service, tagger, store = core
    scanned = []
    real = pipeline.scan_windows
    monkeypatch.setattr(pipeline, "scan_windows", lambda *a, **kw: scanned.append(1) or real(*a, **kw))

    def count(result):
        return REGISTRY.get_sample_value("audiolime_explainer_scan_cache_requests_total",
                                         {"model": "fake", "result": result}) or 0.0

    hits, misses = count("hit"), count("miss")
    first = service.run(job(seed=0))
    entries = list((store.root / "scans").glob("*.npz"))
    assert len(scanned) == 1 and len(entries) == 1 and count("miss") == misses + 1
    again = service.run(job(seed=1))
    assert len(scanned) == 1 and count("hit") == hits + 1
    assert again.document.song_top_tags == first.document.song_top_tags
    assert again.document.audio.window_start_s == first.document.audio.window_start_s
    entries[0].write_bytes(b"not an npz")
    service.run(job(seed=2))
    assert len(scanned) == 2 and count("miss") == misses + 2
    with np.load(entries[0]) as z:  # rewritten, readable again
        assert z["probs"].shape == (len(z["starts"]), len(tagger.labels))
    key = scans.scan_key(tagger, "ab" * 32, 4000, 16)
    other = FakeTagger()
    other.version = 2  # type: ignore[misc]
    assert key != scans.scan_key(other, "ab" * 32, 4000, 16) and key != scans.scan_key(tagger, "ab" * 32, 4000, 64)
    assert key != scans.scan_key(tagger, "cd" * 32, 4000, 16)


def test_window_cost_follows_the_latest_explanations_per_model():
    """The replica's measure of a tagger window's cost (sizes work to a deadline): per model, an
    even blend of the newest explanation's predict seconds per window and what came before; an
    explanation of too few windows (overhead, not cost) changes nothing; unknown is 0."""
    from audiolime.explainer.service import WindowCost

    cost = WindowCost()
    assert cost.get("musicnn-msd") == 0.0
    cost.observe("musicnn-msd", 20.0, 100)  # 0.2 s a window under load
    cost.observe("musicnn-msd", 8.0, 100)  # 0.08 s once it is quiet
    assert cost.get("musicnn-msd") == pytest.approx(0.14)
    cost.observe("musicnn-msd", 1.0, 1)  # one window: ignored
    assert cost.get("musicnn-msd") == pytest.approx(0.14) and cost.get("fcn-msd") == 0.0


def test_the_song_scan_stops_growing_with_the_song():
    """Up to SCAN_MAX_WINDOWS the scan sees every half window and the song's last window; beyond, that
    many windows spread evenly from the first to the last (a 10-minute song costs a 99 s song's scan)."""
    import numpy as np

    from audiolime.method.pipeline import SCAN_MAX_WINDOWS, scan_starts

    w, hop = 48000, 24000  # musicnn's 3 s at 16 kHz
    short = scan_starts(60 * 16000, w, hop)
    assert list(short[:3]) == [0, hop, 2 * hop] and short[-1] == 60 * 16000 - w and len(short) < SCAN_MAX_WINDOWS
    long_ = scan_starts(600 * 16000, w, hop)
    gaps = np.diff(long_)
    assert len(long_) == SCAN_MAX_WINDOWS and long_[0] == 0 and long_[-1] == 600 * 16000 - w
    assert gaps.max() - gaps.min() <= 1 and gaps.min() > hop
    on_10ms = scan_starts(600 * 16000, w, hop, quantum=160)
    assert len(on_10ms) == SCAN_MAX_WINDOWS and not (on_10ms[:-1] % 160).any() and on_10ms[-1] == 600 * 16000 - w
    assert list(scan_starts(w // 2, w, hop)) == [0]  # shorter than a window: one, zero-padded
