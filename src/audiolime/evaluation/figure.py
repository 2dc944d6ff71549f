"""The evaluation's figure (``figure.png``): keep-top-k rate against k per tagger, one line per
method (audioLIME variants, SLIME, random) with 95 % intervals, and the mean deletion/insertion
areas per method beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiolime.evaluation.config import RANDOM, SLIME, EvalConfig

FIXED = {SLIME: "tab:orange", RANDOM: "tab:gray"}
CYCLE = ("tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def colours(cfg: EvalConfig) -> dict[str, str]:
    out = dict(FIXED)
    for i, v in enumerate(cfg.variants):
        out[v.name] = CYCLE[i % len(CYCLE)]
    return out


def figure(path: Path, cfg: EvalConfig, table: dict) -> None:
    """Top row: keep-top-k rate vs k (solid, shaded 95 % CI). Bottom row: mean deletion (lower is
    better) and insertion (higher is better) area per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cfg.taggers)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 6.4), squeeze=False)
    ks = list(cfg.ks)
    col = colours(cfg)
    for i, t in enumerate(cfg.taggers):
        ax = axes[0][i]
        for m in cfg.methods:
            cells = [table[t][m]["keep"][str(k)] for k in ks]
            y = np.array([np.nan if c["rate"] is None else 100 * c["rate"] for c in cells])
            lo = [np.nan if c["ci_low"] is None else 100 * c["ci_low"] for c in cells]
            hi = [np.nan if c["ci_high"] is None else 100 * c["ci_high"] for c in cells]
            ax.plot(ks, y, marker="o", color=col[m], label=m, linestyle="--" if m in FIXED else "-")
            ax.fill_between(ks, lo, hi, color=col[m], alpha=0.1)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("k (top components kept)")
        ax.set_xticks(ks)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax = axes[1][i]
        x = np.arange(len(cfg.methods))
        dele = [table[t][m]["deletion_auc"] or np.nan for m in cfg.methods]
        ins = [table[t][m]["insertion_auc"] or np.nan for m in cfg.methods]
        ax.bar(x - 0.2, dele, 0.4, color=[col[m] for m in cfg.methods], alpha=0.5, label="deletion (lower better)")
        ax.bar(x + 0.2, ins, 0.4, color=[col[m] for m in cfg.methods], label="insertion (higher better)",
               edgecolor="black")
        ax.set_xticks(x)
        ax.set_xticklabels(cfg.methods, rotation=30, fontsize=7, ha="right")
        ax.set_ylabel("mean area (target probability)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("% windows: top tag kept")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
