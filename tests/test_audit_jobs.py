"""Catalog audits through the explainer service (``audiolime audit --server``, audiolime.auditjobs):
the job journal (a torn line, the latest entry wins), a killed audit's jobs re-attached and not
submitted again, a failed job reported and not fatal, the service's explanation converted into the
in-process audit's record; and through real services (``audiolime up``): an audit SIGKILLed after
its first jobs are submitted, run again, with every window recorded once and no job submitted twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audiolime import wire
from audiolime.auditdir import JOURNAL, JobEntry, append_job, load_jobs, load_records
from audiolime.auditjobs import Unit, records_from_document, run_jobs, window_starts
from audiolime.errors import InvalidInput, Unavailable
from audiolime.explanation.describe import describe
from audiolime.inputs import AudioSource
from audiolime.method.request import ExplainRequest
from audiolime.v1 import explainer_pb2
from conftest import REPO, audiolime_up, cli_error, toy_explanation

Job = explainer_pb2.ExplanationJob


# -- the journal -------------------------------------------------------------------------------------
def test_the_journal_skips_a_torn_line_and_keeps_the_latest_entry(tmp_path: Path) -> None:
    append_job(tmp_path, JobEntry("musicnn-msd", "/a.ogg", 0, None, "j1"))
    append_job(tmp_path, JobEntry("musicnn-msd", "/a.ogg", 1, 12.5, "j2"))
    append_job(tmp_path, JobEntry("musicnn-msd", "/a.ogg", 1, 12.5, "j2", "INTERNAL: boom"))
    with (tmp_path / JOURNAL).open("a") as f:
        f.write('{"tagger": "musicnn-msd", "song": "/b.ogg", "window": 0, "start_s": nu')  # a killed writer
    jobs = load_jobs(tmp_path)
    assert jobs == {("musicnn-msd", "/a.ogg", 0): JobEntry("musicnn-msd", "/a.ogg", 0, None, "j1"),
                    ("musicnn-msd", "/a.ogg", 1): JobEntry("musicnn-msd", "/a.ogg", 1, 12.5, "j2", "INTERNAL: boom")}
    append_job(tmp_path, JobEntry("musicnn-msd", "/b.ogg", 0, None, "j3"))  # a fresh line after the torn one
    assert load_jobs(tmp_path)[("musicnn-msd", "/b.ogg", 0)].job_id == "j3"
    assert len((tmp_path / JOURNAL).read_text().splitlines()) == 5


def test_window_starts_one_is_the_explainers_choice_more_are_evenly_spaced() -> None:
    assert window_starts(100.0, 1) == [None]
    assert window_starts(100.0, 4) == [0.0, 25.0, 50.0, 75.0]
    assert window_starts(10.0, 3) == [0.0, 3.33, 6.67]


# -- the explanation as records -----------------------------------------------------------------------
def _proto(tags=("voice", "drums")) -> explainer_pb2.Explanation:
    doc = describe(toy_explanation(tags=tags))
    return wire.explanation_to_proto(doc.with_files(lambda f: f"http://127.0.0.1:9/{f}"), "e1",
                                     "http://127.0.0.1:9/explanation.json", time.time() + 60, False)


def test_records_from_the_service_match_the_in_process_weights() -> None:
    """Stem-major weights from the document's ranked components equal the method's by component index."""
    result = toy_explanation()
    doc = wire.explanation_from_proto(_proto())
    recs = records_from_document(doc, "/songs/tone.wav", 3)
    assert [r.tag for r in recs] == ["voice", "drums"]
    for r, target in zip(recs, result.explanation.targets):
        expect = [round(rc.weight, 6) for rc in sorted(target.ranking, key=lambda rc: rc.component.index)]
        assert r.weights == pytest.approx(expect, abs=1e-6)
        assert r.tagger == "toy@1" and r.window == 3 and r.stems == tuple(result.factorization.sources)
        assert r.segments == 4 and r.end_s - r.start_s == pytest.approx(0.5, abs=1e-3)
        assert r.probability == pytest.approx(float(result.explanation.prediction[target.tag_index]), abs=1e-5)
        assert r.surrogate_r2 == pytest.approx(float(target.surrogate_r2), abs=1e-5)
    top = max(recs[0].weights)
    assert recs[0].top == divmod(recs[0].weights.index(top), 4)


class FakeClient:
    """SubmitExplanation/GetExplanation in memory: each job succeeds after ``polls`` gets (or fails)."""

    def __init__(self, known: dict[str, int] | None = None, fail: set[int] | None = None, polls: int = 2) -> None:
        self.jobs: dict[str, int] = dict(known or {})  # job id -> gets left
        self.submitted: list[explainer_pb2.ExplainRequest] = []
        self.fail, self.polls, self.result = fail or set(), polls, _proto(("voice",))
        self.most_outstanding = 0

    def submit(self, pb):
        self.submitted.append(pb)
        job_id = f"job{len(self.submitted)}"
        self.jobs[job_id] = self.polls
        self.most_outstanding = max(self.most_outstanding, sum(1 for v in self.jobs.values() if v > 0))
        return job_id

    def get(self, job_id):
        self.jobs[job_id] -= 1
        if self.jobs[job_id] > 0:
            return Job(job_id=job_id, state=Job.RUNNING)
        if int(job_id.removeprefix("job").removeprefix("old")) in self.fail:
            return Job(job_id=job_id, state=Job.FAILED, error_code="INVALID_ARGUMENT", error_message="bad window")
        return Job(job_id=job_id, state=Job.SUCCEEDED, result=self.result)


def _run(out: Path, client: FakeClient, units: list[Unit], in_flight: int = 2):
    req = ExplainRequest(model="toy", tags=("voice",), segments=4, num_samples=32, curves="off").validate()
    done = load_records(out)
    return run_jobs(client, out, units, req, req.tags, done, lambda s: AudioSource(content=b"x", filename=s),
                    in_flight, log=lambda line: None)


def test_a_killed_audits_jobs_are_re_attached_not_submitted_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("audiolime.auditjobs.POLL_S", 0.0)
    units = [Unit("toy", f"/s{i}.wav", w, 1.5 * w) for i in range(3) for w in range(2)]
    append_job(tmp_path, JobEntry("toy", "/s0.wav", 0, 0.0, "old1"))  # submitted by the killed run
    append_job(tmp_path, JobEntry("toy", "/s0.wav", 1, 1.5, "old2"))
    client = FakeClient({"old1": 1, "old2": 3}, polls=3)
    outcome = _run(tmp_path, client, units)
    assert (outcome.attached, outcome.submitted, outcome.explained, outcome.failed) == (2, 4, 6, [])
    assert client.most_outstanding <= 2  # --in-flight bounds what is submitted at once
    starts = sorted((pb.audio.filename, pb.window_start_s) for pb in client.submitted)
    assert starts == [("/s1.wav", 0.0), ("/s1.wav", 1.5), ("/s2.wav", 0.0), ("/s2.wav", 1.5)]
    assert all(pb.tags == ["voice"] and pb.num_samples == 32 and pb.segments == 4 for pb in client.submitted)
    recs = load_records(tmp_path)
    assert sorted((k[1], k[2]) for k in recs) == sorted((u.song, u.window) for u in units)
    ids = [e.job_id for e in load_jobs(tmp_path).values()]
    assert sorted(ids) == ["job1", "job2", "job3", "job4", "old1", "old2"]
    again = FakeClient()  # everything recorded: nothing submitted, nothing waited for
    assert _run(tmp_path, again, units).explained == 0 and again.submitted == []


def test_a_failed_job_is_reported_not_fatal_and_submitted_again_by_a_rerun(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("audiolime.auditjobs.POLL_S", 0.0)
    units = [Unit("toy", "/s0.wav", 0, None), Unit("toy", "/s1.wav", 0, None)]
    outcome = _run(tmp_path, FakeClient(fail={1}), units)
    assert outcome.explained == 1 and outcome.failed == [("/s0.wav", "window 0: job job1 failed: "
                                                                      "INVALID_ARGUMENT: bad window")]
    assert load_jobs(tmp_path)[("toy", "/s0.wav", 0)].error.startswith("INVALID_ARGUMENT")
    rerun = FakeClient()
    assert _run(tmp_path, rerun, units).explained == 1 and len(rerun.submitted) == 1
    assert rerun.submitted[0].audio.filename == "/s0.wav" and not rerun.submitted[0].HasField("window_start_s")


def test_server_refusals_are_one_line(capsys, tmp_path: Path) -> None:
    song = REPO / "models" / "demo" / "audio_example.mp3"
    err = cli_error(capsys, ["audit", str(song), "--server", "127.0.0.1:9", "--against", "fcn-msd",
                             "--out", str(tmp_path / "o")])
    assert "--server with --against needs --tag" in err
    err = cli_error(capsys, ["audit", str(song), "--server", "127.0.0.1:9", "--in-flight", "0",
                             "--out", str(tmp_path / "o")])
    assert "--in-flight" in err and "between 1 and 64" in err


# -- through real services ------------------------------------------------------------------------------
@pytest.mark.slow  # starts audiolime up and the audit as processes
def test_an_audit_through_the_services_resumes_after_sigkill(tmp_path: Path, shared: Path, models: Path) -> None:
    """2 real songs x 2 windows, 32 masks: SIGKILL the audit once its first jobs are journaled, run
    it again: the journaled jobs are re-attached (no job id twice), every window recorded once, the
    profile written with its intervals."""
    audio = shared / "audio"
    songs = [str(audio / "admiralbob77_-_Choice_-_Drum-bass.ogg"), str(audio / "Kevin_MacLeod_-_Vibe_Ace.ogg")]
    out = tmp_path / "audit"
    with audiolime_up(tmp_path) as stack:
        argv = [sys.executable, "-m", "audiolime.cli", "audit", *songs, "--server", f"127.0.0.1:{stack.explainer}",
                "--windows-per-song", "2", "--num-samples", "32", "--in-flight", "2", "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
        first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        journal = out / JOURNAL
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            if journal.is_file() and len(journal.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read().decode()[-2000:] if first.stderr else ""
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        before = [json.loads(line)["job_id"] for line in journal.read_text().splitlines()]
        assert len(before) == 2 and not (out / "audit.json").exists()
        rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    ids = [e["job_id"] for e in entries]
    assert len(ids) == len(set(ids)) == 4 and ids[:2] == before and not any(e["error"] for e in entries)
    assert "2 re-attached" in rerun.stdout and "2 jobs submitted now" in rerun.stdout
    recs = load_records(out)
    lines = (out / "audit.jsonl").read_text().splitlines()
    assert len(lines) == len(recs) == 4  # one tag (top-1), every window once
    assert sorted((Path(k[1]).name, k[2]) for k in recs) == sorted((Path(s).name, w) for s in songs for w in (0, 1))
    assert {k[0].split("@")[0] for k in recs} == {"musicnn-msd"} and len({k[3] for k in recs if "Drum" in k[1]}) == 1
    doc = json.loads((out / "audit.json").read_text())
    assert doc["explanations"] == 4 and sum(p["n"] for p in doc["profiles"]) == 4
    for p in doc["profiles"]:
        assert {s["name"] for s in p["stems"]} == {"vocals", "accompaniment"}
        assert all(0 <= s["top1_ci"][0] <= s["top1_share"] <= s["top1_ci"][1] <= 1 for s in p["stems"])
    assert (out / "audit.md").is_file()
    starts = {(Path(r.song).name, r.window): r.start_s for r in recs.values()}
    assert starts[("Kevin_MacLeod_-_Vibe_Ace.ogg", 1)] == pytest.approx(30.5, abs=0.6)  # evenly spaced: D / 2
    assert any(np.isfinite(r.weights).all() and max(r.weights) > 0 for r in recs.values())


class Refusing(FakeClient):
    """Refuses the submissions of the songs in ``bad`` (INVALID_ARGUMENT at once)."""

    def __init__(self, bad: set[str]) -> None:
        super().__init__()
        self.bad = bad

    def submit(self, pb):
        if pb.audio.filename in self.bad:
            raise InvalidInput(f"INVALID_ARGUMENT: {pb.audio.filename}: not audio")
        return super().submit(pb)


def test_a_refused_first_request_is_the_requests_fault_a_later_one_is_listed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("audiolime.auditjobs.POLL_S", 0.0)
    units = [Unit("toy", "/s0.wav", 0, None), Unit("toy", "/s1.wav", 0, None)]
    with pytest.raises(InvalidInput, match="not audio"):
        _run(tmp_path, Refusing({"/s0.wav", "/s1.wav"}), units)
    (tmp_path / "b").mkdir()
    outcome = _run(tmp_path / "b", Refusing({"/s1.wav"}), units)
    assert outcome.explained == 1 and outcome.failed == [("/s1.wav", "window 0: refused: INVALID_ARGUMENT: "
                                                                      "/s1.wav: not audio")]


class Down(FakeClient):
    def submit(self, pb):
        raise Unavailable("UNAVAILABLE: connection refused")


def test_an_explainer_never_reached_fails_the_audit_at_once(tmp_path: Path) -> None:
    t = time.monotonic()
    with pytest.raises(Unavailable):
        _run(tmp_path, Down(), [Unit("toy", "/s0.wav", 0, None)])
    assert time.monotonic() - t < 5 and not (tmp_path / JOURNAL).exists()
