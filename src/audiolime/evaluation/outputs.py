"""The files an evaluation run leaves in its output directory, rebuilt from all finished items
on every run: ``results.csv`` (one row per song, window, method and k), ``results.json`` (the
configuration, the aggregated table and the paper's numbers), ``results.md`` (the table for
reading) and ``figure2.png`` (:mod:`audiolime.evaluation.figure`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from audiolime.evaluation.aggregate import aggregate, flat_rows, meta_means
from audiolime.evaluation.config import METHODS, EvalConfig
from audiolime.evaluation.figure import figure
from audiolime.evaluation.paper import PAPER, PAPER_KS, PAPER_MODEL

CSV_FIELDS = ["song", "window", "window_start_s", "tagger", "method", "k", "components", "draws", "same_top_tag",
              "top_tag", "kept_top_tag", "surrogate_r2"]


def write_outputs(out: Path, cfg: EvalConfig, items: Sequence[dict]) -> dict:
    """Write all four outputs; returns the aggregated table."""
    rows = flat_rows(items)
    write_csv(out / "results.csv", rows)
    table = aggregate(cfg, rows)
    write_json(out / "results.json", cfg, table, items)
    (out / "results.md").write_text(markdown(cfg, table, items), encoding="utf-8")
    figure(out / "figure2.png", cfg, table)
    return table


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})


def write_json(path: Path, cfg: EvalConfig, table: dict, items: Sequence[dict]) -> None:
    doc = {"config": {**asdict(cfg), "ks": list(cfg.ks), "taggers": list(cfg.taggers),
                      "windows_per_song": {t: cfg.windows(t) for t in cfg.taggers}, "windows_override": None,
                      "audioLIME_components": cfg.audiolime_components,
                      "slime_components": cfg.slime_components},
           "items": len(items), "songs": sorted({rec["song"] for rec in items}),
           "table": table, "paper": {m: {meth: dict(zip(map(str, PAPER_KS), v)) for meth, v in d.items()}
                                     for m, d in PAPER.items()},
           "paper_model": PAPER_MODEL,
           "positive_components": meta_means(cfg, items, "positive"),
           "surrogate_r2": meta_means(cfg, items, "surrogate_r2")}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _cell(c: dict) -> str:
    if c["rate"] is None:
        return "n/a"
    return f"{c['rate']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}] (n={c['n']})"


def markdown(cfg: EvalConfig, table: dict, items: Sequence[dict]) -> str:
    lines = ["# Same-top-tag rate (audioLIME paper, Figure 2)", "",
             f"{len(items)} explanations ({len({r['song'] for r in items})} songs; windows per song: "
             + ", ".join(f"{t} {cfg.windows(t)}" for t in cfg.taggers)
             + f", at most ceil(song / window), evenly spaced centres); N = {cfg.num_samples} perturbations; "
             f"audioLIME {cfg.separator} x tau = {cfg.segments} (d' = {cfg.audiolime_components}); "
             f"SLIME tau = {cfg.slime_segments} x F = {cfg.slime_bands} (d' = {cfg.slime_components}, "
             f"{cfg.slime_domain} domain, baseline {cfg.slime_baseline}); random R = {cfg.draws}; "
             f"seed {cfg.seed}. Cells: rate [95% Wilson CI] (n explanations).", ""]
    ks = list(cfg.ks)
    for t in cfg.taggers:
        paper = PAPER.get(PAPER_MODEL.get(t, ""), None)
        lines += [f"## {t}", "", "| method | " + " | ".join(f"k={k}" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for m in METHODS:
            label = f"slime, {cfg.slime_domain} domain" if m == "slime" else m
            lines.append(f"| {label} (measured) | " + " | ".join(_cell(table[t][m][str(k)]) for k in ks) + " |")
            if paper:
                vals = dict(zip(PAPER_KS, paper[m]))
                lines.append(f"| {m} (paper {PAPER_MODEL[t]}) | "
                             + " | ".join(f"{vals[k]:.2f}" if k in vals else "-" for k in ks) + " |")
        if not paper:
            lines.append("")
            lines.append(f"(the paper has no {t} results; see the FCN / SampleCNN reference below)")
        lines.append("")
    lines += ["## Paper reference (Haunschmid et al. 2020, Fig. 2)", "",
              "| model | method | " + " | ".join(f"k={k}" for k in PAPER_KS) + " |",
              "|---|---|" + "---|" * len(PAPER_KS)]
    for model, d in PAPER.items():
        for m in METHODS:
            lines.append(f"| {model} | {m} | " + " | ".join(f"{v:.2f}" for v in d[m]) + " |")
    return "\n".join(lines) + "\n"
