"""The files an evaluation run leaves in its output directory, rebuilt from all finished results
on every run: ``results.csv`` (one row per song, window, method and k), ``results.json`` (the
configuration and the aggregated table), ``results.md`` (the tables for reading) and
``figure.png`` (:mod:`audiolime.evaluation.figure`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from audiolime.evaluation.aggregate import aggregate
from audiolime.evaluation.config import RANDOM, SLIME, EvalConfig
from audiolime.evaluation.figure import figure
from audiolime.method.request import TIE

CSV_FIELDS = ["song", "window", "window_start_s", "tagger", "top_tag", "top_probability", "method", "k", "components",
              "keep", "keep_probability", "kept_top_tag", "drop_lost", "drop_probability", "deletion_auc",
              "insertion_auc", "surrogate_r2", "stability", "calls_sampling", "calls_metrics", "stopping"]


def write_outputs(out: Path, cfg: EvalConfig, records: Sequence[dict]) -> dict:
    """Write all four outputs; returns the aggregated table."""
    write_csv(out / "results.csv", records)
    table = aggregate(cfg, records)
    doc = {"config": cfg.describe(), "results": len(records), "songs": sorted({r["song"] for r in records}),
           "table": table}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown(cfg, table, records), encoding="utf-8")
    figure(out / "figure.png", cfg, table)
    return table


def write_csv(path: Path, records: Sequence[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            res = r["result"]
            common = {k: r.get(k) for k in ("song", "window", "window_start_s", "tagger", "top_tag", "top_probability",
                                            "method")}
            common.update({k: res.get(k) for k in ("deletion_auc", "insertion_auc", "surrogate_r2", "stability")})
            if "calls" in res:
                common.update(calls_sampling=res["calls"]["sampling"], calls_metrics=res["calls"]["metrics"],
                              stopping=res["stopping"]["reason"])
            for row in res.get("rows", []):
                w.writerow({k: ("" if v is None else v) for k, v in {**common, **row}.items()})


def _cell(c: dict) -> str:
    if not c or c.get("rate") is None:
        return "n/a"
    return f"{c['rate']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}] n={c['n']}"


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(cfg: EvalConfig, table: dict, records: Sequence[dict]) -> str:
    variants = ", ".join(f"`{v.name}` ({', '.join(f'{k}={val}' for k, val in v.options) or 'product defaults'}"
                         f"{', reference' if v.reference else ''})" for v in cfg.variants)
    lines = ["# audioLIME variants vs SLIME vs random", "",
             f"{len({(r['song'], r['tagger'], r['window']) for r in records})} windows "
             f"({len({r['song'] for r in records})} songs; windows per song: "
             + ", ".join(f"{t} {cfg.windows(t)}" for t in cfg.taggers)
             + f", at most ceil(song / window), evenly spaced centres). Variants: {variants}. "
             f"SLIME tau = {cfg.slime_segments} x F = {cfg.slime_bands} ({cfg.slime_domain} domain, baseline "
             f"{cfg.slime_baseline}, N = {cfg.slime_samples or 'auto'}); random over `{cfg.primary.name}`'s components "
             f"(R = {cfg.draws} top-k draws, {cfg.curve_draws} random rankings per window); reference N = "
             + ", ".join(f"{t} {cfg.reference_n(t)}" for t in cfg.taggers)
             + f"; seed {cfg.seed}. Rates: [95% Wilson CI] n = windows.", ""]
    ks = list(cfg.ks)
    for t in cfg.taggers:
        rows = table[t]
        lines += [f"## {t}", "", "### Keep-top-k: the top tag survives on only the top-k components (higher is better)",
                  "", "| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        lines += [f"| {m} | " + " | ".join(_cell(rows[m]["keep"][str(k)]) for k in ks) + " |" for m in cfg.methods]
        lines += ["", f"### Keep-top-k, paired: `{cfg.primary.name}` minus each method on the same windows "
                  "(difference of rates; wins / losses: windows where only one keeps the top tag)", "",
                  "| vs | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for m, cells in rows["paired"].items():
            lines.append(f"| {m} | " + " | ".join(
                "n/a" if c["diff"] is None else f"{c['diff']:+.2f} ({c['wins']}/{c['losses']}, n={c['n']})"
                for c in (cells[str(k)] for k in ks)) + " |")
        lines += ["", "### Drop-top-k: the top tag is lost without the top-k components (higher is better)", "",
                  "| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        lines += [f"| {m} | " + " | ".join(_cell(rows[m]["drop"][str(k)]) for k in ks) + " |" for m in cfg.methods]
        lines += ["", "### Curves and cost", "",
                  "| method | deletion AUC | insertion AUC | deletion < random's | insertion > random's | R\u00b2 | "
                  "top-3 stability | tagger calls (median) | metric calls (median) | stopping | s/window |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in cfg.methods:
            s = rows[m]
            if m == RANDOM:
                lines.append(f"| {m} | {_fmt(s['deletion_auc'])} | {_fmt(s['insertion_auc'])} | | | | | | | | |")
                continue
            lines.append(f"| {m} | {_fmt(s['deletion_auc'])} | {_fmt(s['insertion_auc'])} | "
                         f"{_cell(s.get('deletion_below_random'))} | {_cell(s.get('insertion_above_random'))} | "
                         f"{_fmt(s.get('surrogate_r2'))} | {_fmt(s.get('stability'))} | "
                         f"{_fmt((s.get('calls') or {}).get('sampling_median'), '.0f')} | "
                         f"{_fmt((s.get('calls') or {}).get('metrics_median'), '.0f')} | "
                         f"{', '.join(f'{k} {v}' for k, v in (s.get('stopping') or {}).items())} | "
                         f"{_fmt(s.get('seconds_median'), '.1f')} |")
        refs = [(m, rows[m]["reference"]) for m in cfg.methods if m not in (SLIME, RANDOM) and rows[m].get("reference")]
        if refs:
            lines += ["", "### Agreement with the large-N reference (top-3 set, same factorization and kernel)", "",
                      "| variant | same top-3 | same up to ties | mean Jaccard | calls (median) | reference calls | "
                      "calls / reference | stream reaches the reference's top-3 | calls to reach (median) |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for m, r in refs:
                ties = r.get("same_top3_up_to_ties")
                lines.append(f"| {m} | {_cell(r['same_top3'])} | {_cell(ties) if ties else ''} | "
                             f"{_fmt(r['jaccard_mean'])} | "
                             f"{_fmt(r['calls_median'], '.0f')} | {_fmt(r['reference_calls_median'], '.0f')} | "
                             f"{_fmt(r['calls_ratio_median'], '.3f')} | {_cell(r['reached'])} | "
                             f"{_fmt(r['calls_to_reach_median'], '.0f')} |")
            lines += ["", f"Up to ties: components within {TIE:g} x the reference's largest weight of its 3rd weight "
                      "count as tied for the last places (the product's stopping rule, audiolime.method.surrogate.TIE).",
                      "", "Stopping rules replayed on the recorded traces (threshold x consecutive rounds; "
                      f"capped at the trace's end, {cfg.trace_samples} masks for adaptive variants):", "",
                      "| variant | rule | same top-3 | calls (median) | stopped before the cap |", "|---|---|---|---|---|"]
            for m, r in refs:
                for rule, x in r["replay"].items():
                    lines.append(f"| {m} | {rule} | {_cell(x['same_top3'])} | {_fmt(x['calls_median'], '.0f')} | "
                                 f"{_cell(x['stopped'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"
