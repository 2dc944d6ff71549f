"""The terminal rendering of an explanation document (the CLI's table output)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_document(doc: dict, console: Console, out_dir: str | None = None) -> None:
    """The document as tables and lines (version 1 documents: without the faithfulness lines)."""
    audio = doc["audio"]
    w = audio["window"]
    console.print(f"[bold]{audio['path']}[/bold]  {audio['duration_s']:.1f} s, {audio['sample_rate']} Hz, "
                  f"{audio['channels']} ch; window {w['start_s']:.2f}\u2013{w['start_s'] + w['duration_s']:.2f} s")
    console.print(f"tagger {doc['model']['name']} v{doc['model']['version']}, separator {doc['separator']['model']} "
                  f"(residual {doc['separator']['residual_rel_rms']:.1e})")
    for warning in doc.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    top = sorted(doc["prediction"].items(), key=lambda kv: -kv[1])[:5]
    console.print("predicted (window): " + ", ".join(f"{t} {p:.3f}" for t, p in top))
    for target in doc["targets"]:
        table = Table(title=f"Explanation of '{target['tag']}' (surrogate R\u00b2 {target['surrogate_r2']:.3f})",
                      title_justify="left")
        for col in ("rank", "source", "segment", "time (s)", "weight", "file"):
            table.add_column(col, justify="right" if col in ("rank", "segment", "weight") else "left")
        for c in target["components"]:
            if c["file"] is None and c["rank"] > doc["top_k"] + 3:
                continue
            table.add_row(str(c["rank"]), c["source"], str(c["segment"]), f"{c['start_s']:.2f}\u2013{c['end_s']:.2f}",
                          f"{c['weight']:+.4f}", c["file"] or "")
        console.print(table)
        f = target["fidelity"]
        verdict = "[green]kept[/green]" if f["same_top_tag"] else "[red]lost[/red]"
        console.print(f"keep top-{f['top_k']}: only the top-{f['top_k']} positive components -> top tag "
                      f"'{f['top_tag']}' (original top tag {verdict}); p({target['tag']}) "
                      f"{f['original_target_probability']:.3f} -> {f['target_probability']:.3f}")
        fa = target.get("faithfulness")
        if fa:
            d = fa["drop_top_k"]
            lost = "[green]lost[/green]" if not d["same_top_tag"] else "[red]kept[/red]"
            console.print(f"drop top-{f['top_k']}: without them -> top tag '{d['top_tag']}' (original top tag {lost}); "
                          f"p({target['tag']}) -> {d['target_probability']:.3f}")
            if fa["deletion"] and fa["insertion"]:
                console.print(f"curves: deletion AUC {fa['deletion']['auc']:.3f} (lower is better), insertion AUC "
                              f"{fa['insertion']['auc']:.3f} (higher is better)")
            tie = (doc.get("sampling") or {}).get("tie_tolerance") or 0
            console.print(f"Ranking stability (bootstrap) {fa['stability']:.2f}: share of bootstrap refits with the "
                          f"same top-{doc['top_k']} set" + (f", up to ties within {tie:.0%} of the top weight"
                                                            if tie else "") + " (reproducibility, not faithfulness)",
                          markup=False, highlight=False)
            v = fa.get("verdict")
            if v:
                console.print(f"verdict: {v['summary']}", markup=False, highlight=False)
    line = (f"{doc['num_samples']} masks ({doc['unique_samples']} unique"
            f"{', exhaustive' if doc['exhaustive'] else ''}), seed {doc['seed']}")
    if doc.get("stopping"):
        st, sm = doc["stopping"], doc["sampling"]
        line += (f"; {sm['kernel']} kernel, {sm['sampling']} sampling, "
                 + (f"adaptive: {st['rounds']} round{'s' * (st['rounds'] != 1)}, stopped: {st['reason']}"
                    if sm["num_samples"] == 0 else "fixed N" + (" (every mask enumerated)"
                                                                 if st["reason"] == "exhaustive" else "")))
    if doc.get("edges"):
        e = doc["edges"]
        line += f"; {e['mode']} edges" + (f" ({e['fade_s'] * 1000:.0f} ms cross-fades)" if e["mode"] == "fade" else "")
    console.print(line)
    if doc.get("faithfulness_cost"):
        c = doc["faithfulness_cost"]
        console.print(f"faithfulness metrics: {c['tagger_calls']} tagger calls, {c['seconds']:.2f} s")
    console.print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in doc["timings_s"].items()))
    if out_dir:
        console.print(f"wrote {out_dir}/explanation.json, the WAV files listed above, each stem's and the "
                      "complement's (rest_mix.wav)", markup=False, highlight=False)
