"""The explanation cache: the key covers everything that determines an explanation (one
definition, derived from the plan), the same request is answered from the store with fresh URLs
(counted), never past the result's deletion, never for other audio; through the real services the
repeated answer equals the first apart from URLs and timings."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from audiolime.explainer.cache import NOT_IN_KEY, cache_key
from audiolime.explainer.service import ExplainerService, ServiceConfig
from audiolime.method.limits import Limits
from audiolime.method.plan import Plan
from audiolime.method.request import ExplainRequest
from audiolime.processes import metric_value
from audiolime.server import metrics
from audiolime.store import LocalStore
from conftest import DRUMS, FakeSeparator, FakeTagger, audiolime_up, explain_request
from conftest import fake_task as task

REPO = Path(__file__).resolve().parents[1]


class _Tagger:
    name, version = "musicnn-msd", 3


def _changed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return (*value, "x" if not value or isinstance(value[0], str) else 99)
    if value is None:
        return 1.0
    raise AssertionError(f"no change for {value!r}")


def test_changing_any_plan_field_or_other_input_changes_the_key():
    """Every field of the plan and of the request it carries (found by introspection, so a new field
    is covered), the tagger version, the audio's hash and name and the batch size are in the key."""
    plan = Plan(ExplainRequest(tags=("rock",)).validate(), (3,), 16000, 48000)  # type: ignore[arg-type]
    args = (_Tagger(), "ab" * 32, "song.ogg", 64)
    base = cache_key(plan, *args)
    assert base == cache_key(dataclasses.replace(plan), *args) and re.fullmatch(r"[0-9a-f]{64}", base)
    keys = set()
    for f in dataclasses.fields(ExplainRequest):
        req = dataclasses.replace(plan.request, **{f.name: _changed(getattr(plan.request, f.name))})
        key = cache_key(dataclasses.replace(plan, request=req), *args)
        if f.name in NOT_IN_KEY:  # the time budget: a result it cut is never kept
            assert key == base
        else:
            keys.add(key)
    for f in dataclasses.fields(Plan):
        if f.name != "request":
            keys.add(cache_key(dataclasses.replace(plan, **{f.name: _changed(getattr(plan, f.name))}), *args))
    keys.add(cache_key(dataclasses.replace(plan, targets=None), *args))
    other = _Tagger()
    other.version = 4  # type: ignore[misc]
    keys.add(cache_key(plan, other, *args[1:]))
    keys.add(cache_key(plan, args[0], "cd" * 32, *args[2:]))
    keys.add(cache_key(plan, *args[:2], "other.ogg", 64))
    keys.add(cache_key(plan, *args[:3], 16))
    n = len(dataclasses.fields(ExplainRequest)) - len(NOT_IN_KEY) + len(dataclasses.fields(Plan)) - 1 + 1 + 4
    assert len(keys) == n and base not in keys


def test_the_key_has_one_definition():
    """cache_key is defined once and the service is its only caller (no second recipe to drift)."""
    out = subprocess.run(["git", "grep", "-n", "-e", "def cache_key", "-e", "cache_key(", "--", "src"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    defs = [line for line in out if "def cache_key" in line]
    calls = [line for line in out if "def cache_key" not in line and "cache_key(" in line]
    assert len(defs) == 1 and defs[0].startswith("src/audiolime/explainer/cache.py")
    assert all(c.startswith("src/audiolime/explainer/service.py") for c in calls) and calls


class Caller:
    def is_active(self) -> bool:
        return True


def _api(tmp_path, cache=True):
    from audiolime.explainer.core import ExplainerCore
    from audiolime.explainer.jobs import JobRunner
    from audiolime.explainer.jobstore import JobConfig, JobStore
    from audiolime.server.admission import Admission

    store = LocalStore(tmp_path / "store", public_url="http://127.0.0.1:9/", secret=b"k")
    tagger = FakeTagger()
    service = ExplainerService(store, lambda name, version: tagger, FakeSeparator(),
                               ServiceConfig(batch_size=16, limits=Limits(max_bytes=10 ** 7), cache=cache))
    admission = Admission(2, 2, metrics.EXPLANATIONS, "explainer", "explanations")
    runner = JobRunner(JobStore(store, JobConfig(poll_s=0.05, lease_s=5, ttl_s=3600)), service.run, admission, "w")
    return ExplainerCore(service, runner, admission), tagger, store


def _hits(result: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("audiolime_explainer_cache_requests_total",
                                     {"model": "fake", "result": result}) or 0.0


def test_the_same_request_is_answered_from_the_store_with_fresh_urls(tmp_path):
    api, tagger, store = _api(tmp_path)
    hits, misses = _hits("hit"), _hits("miss")
    first = api.explain(task(), Caller())
    calls = len(tagger.calls)
    again = list(api.explain_stream(task(), Caller()))[-1]
    assert len(tagger.calls) == calls, "a hit runs no mask"
    assert again.cache_hit and again.explanation_id == first.explanation_id
    assert again.document.to_json() == first.document.to_json()
    assert again.urls.keys() == first.urls.keys() and again.urls_expire_at >= first.urls_expire_at
    assert (_hits("hit"), _hits("miss")) == (hits + 1, misses + 1)
    # another seed, other audio bytes, another file name: computed
    assert not api.explain(task(seed=1), Caller()).cache_hit
    t = task()
    other = dataclasses.replace(t, audio=dataclasses.replace(t.audio, content=t.audio.content[:-2] + b"\0\0"))
    assert not api.explain(other, Caller()).cache_hit
    renamed = dataclasses.replace(t, audio=dataclasses.replace(t.audio, filename="other.wav"))
    assert not api.explain(renamed, Caller()).cache_hit
    # the pointer is deleted with the explanation, pointer first
    marker = [o.key for o in store.list("expiry/") if o.key.endswith(first.explanation_id)]
    prefixes = json.loads(store.get(marker[0]))["delete"]
    assert prefixes[0].startswith("cache/") and prefixes[1] == f"explanations/{first.explanation_id}/"


def test_a_hit_postpones_the_deletion_and_never_outlives_the_result(tmp_path):
    """A hit is kept the job TTL from now and never less than its URLs (the expiry marker moves,
    the old one goes); a result deleted, or about to be: a miss; jobs always compute; --cache off:
    never a hit."""
    import time

    from audiolime.explainer.cache import MIN_LEFT_S, Entry

    api, _, store = _api(tmp_path)
    first = api.explain(task(), Caller())  # kept 3600 s
    markers = lambda: [o.key for o in store.list("expiry/") if o.key.endswith(first.explanation_id)]  # noqa: E731
    old = markers()
    longer = api.explain(task(url_ttl_s=7200), Caller())
    assert longer.cache_hit and longer.explanation_id == first.explanation_id
    (marker,) = markers()
    assert marker != old[0] and int(marker.split("/")[1].split("-")[0]) >= time.time() + 7200 - 5
    entry = json.loads(store.get(f"cache/{first.cache_key}.json"))
    assert entry["deleted_at"] >= time.time() + 7200 - 5 and longer.urls_expire_at <= entry["deleted_at"]
    api.service.cache.remember(first.cache_key, Entry(first.explanation_id, time.time() + MIN_LEFT_S / 2, False))
    assert not api.explain(task(), Caller()).cache_hit  # about to be deleted
    again = api.explain(task(), Caller())
    assert again.cache_hit
    store.delete_prefix(f"explanations/{again.explanation_id}/")  # what the sweep does at its expiry
    assert not api.explain(task(), Caller()).cache_hit
    api.start()
    try:
        job_id = api.submit(task())
        status = list(api.watch(job_id, Caller()))[-1]
        assert status.result is not None and status.result.explanation_id.startswith(job_id)
    finally:
        api.stop()
    off, _, _ = _api(tmp_path / "off", cache=False)
    a, b = off.explain(task(), Caller()), off.explain(task(), Caller())
    assert not b.cache_hit and a.explanation_id != b.explanation_id and not list((tmp_path / "off").rglob("cache"))


@pytest.mark.slow
def test_a_repeated_request_through_the_services_is_the_same_document(tmp_path):
    """Real separator, tagger and explainer on loopback: the same Explain twice; the second is the
    cache's (no new masks), its message equal to the first apart from URLs and timings."""
    from audiolime.processes import scrape

    with audiolime_up(tmp_path) as stack:
        req = explain_request(DRUMS, tags=["rock"], num_samples=64)
        first = stack.stub.Explain(req, timeout=600)
        again = stack.stub.Explain(req, timeout=60)
        text = scrape(stack.metrics["explainer"])
    assert again.explanation_id == first.explanation_id

    def normal(msg) -> str:
        from google.protobuf import json_format

        d = json_format.MessageToDict(msg)
        d.pop("timingsS", None)
        d.pop("urlsExpireAt", None)
        return re.sub(r'"(https?://[^"]*)"', '"URL"', json.dumps(d, sort_keys=True))

    assert normal(again) == normal(first) and "sig=" in first.manifest_url
    assert metric_value(text, "audiolime_explainer_cache_requests_total", model="musicnn-msd", result="hit") == 1
    assert metric_value(text, "audiolime_explainer_cache_requests_total", model="musicnn-msd", result="miss") == 1
