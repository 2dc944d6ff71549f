"""Plan a catalog audit through the services (``audiolime audit --server``) from measured costs: no
models, no services. docs/capacity.md "Catalog audits" is this script's output and its derivation.

Two models, both fed by the constants below (each a flag; defaults are measurements, sources named):

* **A replay of the measured run** (docs/performance.md "Catalog audits through the services": 52
  windows, musicnn-msd, N = 32, 4 in flight, one replica of each service on the shared 2-core box at
  load 6-8.5, SIGKILLed at 26 records and rerun: 370 s). Each window is held in one of the client's
  in-flight places for its explanation's own stage seconds (the means of the 52 explanation
  documents of that run, ``timings_s``: they already include the contention of the 4 at once),
  plus the explainer's queue pick-up (half a ``--job-poll``) and the client's GetExplanation poll
  (half of 0.5 s), with the client restart in the middle. This checks the accounting (that the
  in-flight windows' own latencies, queueing and the kill explain the wall time, with nothing else
  costing time), not the rates, which come from the same run: ``--check`` fails outside the
  tolerance.
* **The cluster model** for the plan: a discrete-event simulation of one audit's windows with a
  FIFO separator pool (``S`` replicas x ``maxConcurrency``, ``t_sep`` seconds a window), a
  processor-sharing tagger pool (``R`` replicas x ``m`` windows/s, each explanation using at most
  ``ceil(F x B / b)`` replicas' worth: docs/capacity.md "Latency of one explanation") and a fixed
  per-window overhead, at ``C`` windows in flight (the audit's ``--in-flight``, at most the
  explainers' ``replicas x maxConcurrent`` slots); the closed form next to it (throughput = the
  smallest of the tagger, separator and concurrency bounds) is what the 100k-song table uses.

    python bench/bench_catalog_plan.py --check           # replay + plan table
    python bench/bench_catalog_plan.py --songs 100000 --windows-per-song 2 --masks 256
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from dataclasses import dataclass, field, replace

# -- the measured run (docs/performance.md "Catalog audits through the services") -------------
RUN_WINDOWS = 52
RUN_IN_FLIGHT = 4
RUN_WALL_S = 370.0
RUN_KILL_AT = 26  # records when the first run was SIGKILLed; the rerun re-attached its 3 in-flight jobs
# Means over the run's 52 explanation documents (timings_s), seconds per window.
RUN_STAGES_S = {"decode": 0.365, "scan": 0.632, "separate": 11.195, "predict": 8.801, "fit": 0.018,
                "fidelity": 5.489, "store": 0.131}
RUN_TOLERANCE = 0.10
JOB_POLL_S = 1.0  # explainer.jobs.poll: a waiting job is picked up at the next queue scan
CLIENT_POLL_S = 0.5  # audiolime.auditjobs.POLL_S
RESTART_S = 3.0  # client restart after the kill (process start, songs probed); assumed, not measured

# -- measured costs (docs/performance.md, docs/capacity.md, the run's store) --------------------
M_WINDOWS_S = 70.0  # musicnn-msd windows/s per 2-core tagger replica, quiet (capacity.md "The unit")
T_SEP_S = 10.3  # CPU separation of one window's grid chunks, cold (performance.md "Cold latency": 8.4-11.8 s)
T_FIX_S = 0.5  # decode + fit + store per window (the run: 0.51 s)
FAITH_WINDOWS = {32: 34, 256: 62}  # faithfulness tagger windows: the run (34 at N=32); ~62 at the default checks
SCAN_WINDOWS_PER_SONG = 64  # the song scan, at most 64 windows, once per song (kept in scans/)
CAP_REPLICAS = 4  # ceil(maxInFlight 4 x batchSize 64 / max_batch_size 64): one explanation's tagger reach
# Bytes from the run's store (52 windows, 4 songs): per window / per song.
STEMS_B = 37_741_044 / 54  # stems/2stems/<song>/window-*/: 2 x 24-bit FLAC, 44.1 kHz stereo; kept (30-day rule)
EXPLANATION_B = 4_296_174  # explanations/<job>-<n>/: 8 x 3 s 16-bit WAV + json + html; job TTL
INPUT_B = 5_303_353 / 4  # inputs/<sha256>: the song as sent (ogg here); swept with the job TTL
SCAN_B = 38_352 / 4  # scans/<key>.npz; kept (30-day rule)
JOB_B = 291_855 / 56  # jobs/<job>/: job.json + result.json; job TTL
CLIP_B = 27_528_880 / 52  # client side: DIR/clips/ (top-1 component WAV), unless --no-clips
RECORD_B = 27_068 / 52  # client side: DIR/audit.jsonl
CPU = {"tagger": 2, "separator": 2, "explainer": 1}  # chart requests (cpu-values separator: 2)
AUDIT_IN_FLIGHT = 64  # audiolime.method.limits.MAX_AUDIT_IN_FLIGHT: more in flight needs several audits


@dataclass(frozen=True)
class Cluster:
    taggers: int
    separators: int
    in_flight: int  # windows in flight: min(--in-flight, explainer replicas x maxConcurrent)
    m: float = M_WINDOWS_S
    t_sep: float = T_SEP_S
    sep_concurrency: int = 1
    t_fix: float = T_FIX_S
    cap_replicas: int = CAP_REPLICAS


@dataclass(frozen=True)
class Work:
    windows_per_song: int = 2
    masks: int = 256
    faith: int | None = None  # None: FAITH_WINDOWS nearest to masks
    scan_per_song: int = SCAN_WINDOWS_PER_SONG

    @property
    def faith_windows(self) -> int:
        if self.faith is not None:
            return self.faith
        return FAITH_WINDOWS[min(FAITH_WINDOWS, key=lambda n: abs(n - self.masks))]

    @property
    def tagger_windows(self) -> float:
        """Tagger windows one audited window costs: its masks, its checks, the window itself and its
        share of the song's scan."""
        return self.masks + self.faith_windows + 1 + self.scan_per_song / self.windows_per_song


# -- the replay -----------------------------------------------------------------------------------
def replay(durations: list[float], in_flight: int, kill_at: int | None = None, restart_s: float = RESTART_S,
           pickup_s: float = JOB_POLL_S / 2, poll_s: float = CLIENT_POLL_S / 2) -> float:
    """Wall seconds for windows held ``pickup + duration + poll`` each, ``in_flight`` at once, in order.
    After ``kill_at`` recorded windows the client is down ``restart_s`` (the jobs in flight keep
    running on the server: the rerun re-attaches them, and submits nothing while it is down)."""
    clock, submitted, done = 0.0, 0, 0
    running: list[float] = []
    down_until = 0.0
    while done < len(durations):
        while submitted < len(durations) and len(running) < in_flight:
            heapq.heappush(running, max(clock, down_until) + pickup_s + durations[submitted] + poll_s)
            submitted += 1
        clock = max(heapq.heappop(running), down_until)
        done += 1
        if kill_at is not None and done == kill_at:
            down_until = clock + restart_s
    return clock


# -- the cluster simulation -----------------------------------------------------------------------
@dataclass
class _Job:
    left: float  # tagger windows still to evaluate
    sep_done: float = 0.0
    rate: float = 0.0


@dataclass
class SimResult:
    wall_s: float
    tagger_busy: float  # mean fraction of the tagger pool in use
    windows: int = 0
    per_hour: float = field(init=False)

    def __post_init__(self) -> None:
        self.per_hour = 3600 * self.windows / self.wall_s if self.wall_s else 0.0


def simulate(cluster: Cluster, work: Work, windows: int, spread: float = 0.5, seed: int = 0) -> SimResult:
    """Discrete events: each window separates (FIFO over S x c), then evaluates its tagger windows
    (processor sharing over R x m, at most cap x m each), then ``t_fix``; ``in_flight`` at once.
    Each window's tagger work is drawn uniformly within +-``spread`` of the mean (adaptive sampling
    stops after different rounds): with equal work the windows would finish together and queue for
    the separator in convoys, which the real audit's windows do not."""
    rng = random.Random(seed)
    c = cluster
    pool = c.taggers * c.m
    cap = min(c.taggers, c.cap_replicas) * c.m
    sep_free = [0.0] * (c.separators * c.sep_concurrency)
    heapq.heapify(sep_free)
    clock, started, finished, busy_integral = 0.0, 0, 0, 0.0
    waiting_tagger: list[tuple[float, int]] = []  # (separation end, id)
    tagging: dict[int, _Job] = {}
    fixing: list[float] = []  # end times of the fixed overhead

    def start_one() -> None:
        nonlocal started
        begin = max(clock, heapq.heappop(sep_free))
        end = begin + c.t_sep
        heapq.heappush(sep_free, end)
        heapq.heappush(waiting_tagger, (end, started))
        started += 1

    for _ in range(min(c.in_flight, windows)):
        start_one()
    while finished < windows:
        # rates of the windows at the tagger: equal shares, each capped
        n = len(tagging)
        share = min(cap, pool / n) if n else 0.0
        for job in tagging.values():
            job.rate = share
        next_tag = min((clock + j.left / j.rate for j in tagging.values()), default=math.inf)
        next_sep = waiting_tagger[0][0] if waiting_tagger else math.inf
        next_fix = fixing[0] if fixing else math.inf
        t = min(next_tag, next_sep, next_fix)
        busy_integral += (t - clock) * min(pool, share * n)
        for job in tagging.values():
            job.left -= job.rate * (t - clock)
        clock = t
        if t == next_fix:
            heapq.heappop(fixing)
            finished += 1
            if started < windows:
                start_one()
        elif t == next_sep:
            _, jid = heapq.heappop(waiting_tagger)
            tagging[jid] = _Job(work.tagger_windows * rng.uniform(1 - spread, 1 + spread))
        else:
            for jid in [k for k, j in tagging.items() if j.left <= 1e-9]:
                del tagging[jid]
                heapq.heappush(fixing, clock + c.t_fix)
    return SimResult(clock, busy_integral / (pool * clock) if clock else 0.0, windows)


# -- the closed form and the plan -----------------------------------------------------------------
def latency_s(cluster: Cluster, work: Work) -> float:
    """One window alone: separation + its tagger windows at its reach + the fixed overhead."""
    return cluster.t_sep + work.tagger_windows / (min(cluster.taggers, cluster.cap_replicas) * cluster.m) + cluster.t_fix


def throughput_per_h(cluster: Cluster, work: Work) -> dict[str, float]:
    """Windows/hour each resource allows; the audit runs at the smallest."""
    c = cluster
    return {"tagger": 3600 * c.taggers * c.m / work.tagger_windows,
            "separator": 3600 * c.separators * c.sep_concurrency / c.t_sep,
            "in-flight": 3600 * c.in_flight / latency_s(c, work)}


@dataclass(frozen=True)
class Plan:
    songs: int
    work: Work
    cluster: Cluster
    bound: str
    windows_per_h: float
    wall_h: float
    replica_h: dict[str, float]
    cpu_h: float
    store_peak_b: float
    client_b: float


def plan(songs: int, work: Work, cluster: Cluster, explainers: int, ttl_s: float = 3600.0,
         clips: bool = True) -> Plan:
    windows = songs * work.windows_per_song
    rates = throughput_per_h(cluster, work)
    bound = min(rates, key=rates.__getitem__)
    per_h = rates[bound]
    wall_h = windows / per_h
    replica_h = {"tagger": cluster.taggers * wall_h, "separator": cluster.separators * wall_h,
                 "explainer": explainers * wall_h}
    cpu_h = sum(CPU[k] * v for k, v in replica_h.items())
    ttl_h = ttl_s / 3600
    # stems and scans stay (30-day lifecycle rule); explanations, jobs and inputs live a job TTL after
    # the job ends, so at most (throughput x TTL + in flight) of them exist at once.
    live = min(windows, per_h * ttl_h + cluster.in_flight)
    live_songs = min(songs, live / work.windows_per_song + cluster.in_flight)
    store = windows * STEMS_B + songs * SCAN_B + live * (EXPLANATION_B + JOB_B) + live_songs * INPUT_B
    client = windows * ((CLIP_B if clips else 0) + RECORD_B + 200)
    return Plan(songs, work, cluster, bound, per_h, wall_h, replica_h, cpu_h, store, client)


def _gb(b: float) -> str:
    return f"{b / 1e9:,.1f} GB"


def plan_table(songs: int, work: Work, base: Cluster, tagger_counts: list[int], usd_per_cpu_h: float,
               ttl_s: float, clips: bool, max_concurrent: int) -> list[str]:
    rows = ["| taggers | CPU separators | explainers (in flight, audits) | bound | windows/h | wall "
            "| tagger / separator replica-h | CPU-h | cost | store peak | client |",
            "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in tagger_counts:
        # separators to keep r taggers fed, in-flight windows to keep both busy (Little's law, x1.5)
        tagger_rate = 3600 * r * base.m / work.tagger_windows
        s = max(1, math.ceil(tagger_rate * base.t_sep / (3600 * base.sep_concurrency)))
        probe = replace(base, taggers=r, separators=s, in_flight=1)
        need = math.ceil(1.5 * tagger_rate * latency_s(probe, work) / 3600)
        explainers = max(2, math.ceil(need / max_concurrent))
        cluster = replace(probe, in_flight=min(need, explainers * max_concurrent))
        p = plan(songs, work, cluster, explainers, ttl_s, clips)
        audits = math.ceil(cluster.in_flight / AUDIT_IN_FLIGHT)
        rows.append(f"| {r} | {s} | {explainers} ({cluster.in_flight}, {audits}) | {p.bound} | {p.windows_per_h:,.0f} | "
                    f"{p.wall_h:,.0f} h ({p.wall_h / 24:.1f} d) | {p.replica_h['tagger']:,.0f} / "
                    f"{p.replica_h['separator']:,.0f} | {p.cpu_h:,.0f} | ${p.cpu_h * usd_per_cpu_h:,.0f} | "
                    f"{_gb(p.store_peak_b)} | {_gb(p.client_b)} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--songs", type=int, default=100_000)
    ap.add_argument("--windows-per-song", type=int, default=2)
    ap.add_argument("--masks", type=int, default=256, help="unique masks per explanation (adaptive median 256; the run: 32)")
    ap.add_argument("--faith-windows", type=int, default=None, help="faithfulness tagger windows per explanation")
    ap.add_argument("--scan-windows", type=int, default=SCAN_WINDOWS_PER_SONG, help="song scan windows per song")
    ap.add_argument("--m", type=float, default=M_WINDOWS_S, help="tagger windows/s per replica")
    ap.add_argument("--t-sep", type=float, default=T_SEP_S, help="separation seconds per window per separator slot")
    ap.add_argument("--sep-concurrency", type=int, default=1, help="separator.maxConcurrency")
    ap.add_argument("--max-concurrent", type=int, default=4, help="explainer.maxConcurrent")
    ap.add_argument("--taggers", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    ap.add_argument("--usd-per-cpu-hour", type=float, default=0.04, help="assumed price of one vCPU-hour")
    ap.add_argument("--job-ttl", type=float, default=3600.0)
    ap.add_argument("--no-clips", action="store_true")
    ap.add_argument("--check", action="store_true", help="fail unless the replay is within the tolerance")
    args = ap.parse_args(argv)

    per_window = sum(RUN_STAGES_S.values())
    predicted = replay([per_window] * RUN_WINDOWS, RUN_IN_FLIGHT, RUN_KILL_AT)
    error = predicted / RUN_WALL_S - 1
    print(f"replay of the measured run: {RUN_WINDOWS} windows x {per_window:.2f} s (their stage means), "
          f"{RUN_IN_FLIGHT} in flight, killed at {RUN_KILL_AT}: {predicted:.0f} s against {RUN_WALL_S:.0f} s measured "
          f"({error:+.1%}, tolerance +-{RUN_TOLERANCE:.0%})")
    run_tagger = RUN_WINDOWS * (32 + FAITH_WINDOWS[32] + 1) + (16 + 30 + 40 + 64)
    print(f"the run's tagger: {run_tagger} windows in {RUN_WALL_S:.0f} s = {run_tagger / RUN_WALL_S:.1f} windows/s "
          f"({run_tagger / RUN_WALL_S / M_WINDOWS_S:.2f} of a quiet replica's {M_WINDOWS_S:.0f}/s: the box shared "
          f"with the separator and load 6-8.5)")

    work = Work(args.windows_per_song, args.masks, args.faith_windows, args.scan_windows)
    base = Cluster(taggers=1, separators=1, in_flight=1, m=args.m, t_sep=args.t_sep, sep_concurrency=args.sep_concurrency)
    print(f"\nper audited window: {work.tagger_windows:.0f} tagger windows ({work.masks} masks + "
          f"{work.faith_windows} checks + 1 + scan {work.scan_per_song}/{work.windows_per_song}); one tagger "
          f"replica: {3600 * args.m / work.tagger_windows:,.0f} windows/h = "
          f"{3600 * args.m / work.tagger_windows / work.windows_per_song:,.0f} songs/h (tagger-bound)")
    sim = simulate(replace(base, taggers=4, separators=4, in_flight=24), work, 400)
    closed = min(throughput_per_h(replace(base, taggers=4, separators=4, in_flight=24), work).values())
    print(f"DES vs closed form, 4 taggers, 4 separators, 24 in flight, 400 windows: {sim.per_hour:,.0f} vs "
          f"{closed:,.0f} windows/h (tagger pool {sim.tagger_busy:.0%} busy)")
    print(f"\n{args.songs:,} songs x {args.windows_per_song} windows, {args.masks} masks:\n")
    for line in plan_table(args.songs, work, base, args.taggers, args.usd_per_cpu_hour, args.job_ttl,
                           not args.no_clips, args.max_concurrent):
        print(line)
    if args.check and abs(error) > RUN_TOLERANCE:
        print(f"replay off by {error:+.1%}: outside +-{RUN_TOLERANCE:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
