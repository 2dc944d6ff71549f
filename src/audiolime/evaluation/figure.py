"""The evaluation's figure (``figure2.png``, after the paper's Figure 2): same-top-tag rate
against k per tagger, ours with 95 % intervals next to the paper's published curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiolime.evaluation.config import METHODS, EvalConfig
from audiolime.evaluation.paper import NEAREST_PAPER_MODEL, PAPER, PAPER_KS, PAPER_MODEL

COLORS = {"audiolime": "tab:blue", "slime": "tab:orange", "random": "tab:gray"}


def figure(path: Path, cfg: EvalConfig, table: dict, extra: dict | None = None) -> None:
    """Same-top-tag rate against k per tagger (solid, shaded 95 % CI) with the paper's (dashed).
    ``extra``: ``{tagger: {label: (method colour, {k: cell})}}`` drawn dotted, e.g. another
    run's SLIME domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cfg.taggers)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), sharey=True, squeeze=False)
    ks = list(cfg.ks)
    for ax, t in zip(axes[0], cfg.taggers):
        ref_model = NEAREST_PAPER_MODEL.get(t, "FCN")
        for m in METHODS:
            rates = [table[t][m][str(k)]["rate"] for k in ks]
            lo = [table[t][m][str(k)]["ci_low"] for k in ks]
            hi = [table[t][m][str(k)]["ci_high"] for k in ks]
            y = np.array([np.nan if r is None else 100 * r for r in rates])
            ax.plot(ks, y, "o-", color=COLORS[m], label=f"slime ({cfg.slime_domain})" if m == "slime" else m)
            ax.fill_between(ks, [np.nan if v is None else 100 * v for v in lo],
                            [np.nan if v is None else 100 * v for v in hi], color=COLORS[m], alpha=0.12)
            ax.plot(PAPER_KS, [100 * v for v in PAPER[ref_model][m]], "--", color=COLORS[m], alpha=0.7,
                    label=f"{m} (paper {ref_model})")
        for label, (m, cells) in (extra or {}).get(t, {}).items():
            ax.plot(ks, [np.nan if cells.get(str(k), {}).get("rate") is None else 100 * cells[str(k)]["rate"]
                         for k in ks], "s:", color=COLORS[m], alpha=0.8, label=label)
        ax.set_title(t + ("" if t in PAPER_MODEL else f"  (dashed: paper {ref_model})"), fontsize=9)
        ax.set_xlabel("k (components kept)")
        ax.set_xticks(sorted(set(ks) | set(PAPER_KS)))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("% same top tag")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
