"""The training-history plot (``history.png`` in each exported version): loss and accuracy per epoch, for the
training images and, when some were held out, for validation."""

from __future__ import annotations

from pathlib import Path

HISTORY_PLOT = "history.png"


def plot_history(history: dict[str, list[float]], title: str, path: Path) -> Path:
    """Draw ``history`` (Keras' ``History.history``: ``loss``, ``accuracy``, ``val_*``) into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed, or wanted, on a training machine
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    try:
        for ax, metric in zip(axes, ("loss", "accuracy")):
            for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
                values = history.get(key)
                if values:
                    ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
