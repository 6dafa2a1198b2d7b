"""CMC curve plots (matplotlib, Agg backend: works headless in CI and containers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def plot_cmc(
    curves: Mapping[str, Sequence[float] | np.ndarray],
    out_path: str | Path,
    *,
    title: str = "CMC",
    max_rank: int = 20,
    spreads: Mapping[str, Sequence[float] | np.ndarray] | None = None,
) -> Path:
    """Overlay CMC curves (values in [0, 1]) of several runs/variants into one PNG.

    ``spreads`` optionally gives a per-rank standard deviation for a curve (same label), drawn
    as a shaded band: over several splits the spread is as informative as the mean.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no CMC curves to plot")
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for label, curve in curves.items():
        values = 100.0 * np.asarray(curve, dtype=np.float64)[:max_rank]
        ranks = np.arange(1, values.size + 1)
        (line,) = ax.plot(ranks, values, marker="o", markersize=3, label=label)
        if spreads is not None and label in spreads:
            std = 100.0 * np.asarray(spreads[label], dtype=np.float64)[: values.size]
            ax.fill_between(
                ranks,
                np.clip(values - std, 0, 100),
                np.clip(values + std, 0, 100),
                color=line.get_color(),
                alpha=0.15,
            )
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.set_ylim(0, 102)  # a curve at 100 % stays visible above the frame
    ax.set_xlim(1, max_rank)
    ax.set_xticks(sorted({1, *range(5, max_rank + 1, 5)}))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
