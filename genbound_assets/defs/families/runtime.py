"""What every genbound asset body needs: its partitions grouped by model, progress logging,
and plots as inline images (``MetadataValue.md`` with a base64 PNG, shared/reference/dagster.md)."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from .partitions import split_key

__all__ = ["partitions_by_model", "md_image", "figure_md", "timed", "DagsterLog"]


def partitions_by_model(context: dg.AssetExecutionContext) -> dict[str, list[int]]:
    """The run's checkpoint partitions (one, or a range) as model -> sorted steps."""
    keys = context.partition_keys if context.has_partition_key_range or context.has_partition_key else []
    out: dict[str, list[int]] = {}
    for k in keys:
        model, step = split_key(k)
        out.setdefault(model, []).append(step)
    return {m: sorted(s) for m, s in sorted(out.items())}


def md_image(png: bytes, alt: str = "plot") -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def figure_md(fig, alt: str = "plot") -> dg.MetadataValue:
    """A matplotlib figure as inline-image metadata (small: 100 dpi)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return md_image(buf.getvalue(), alt)


class DagsterLog:
    """A ``log(str)`` callable for the core that writes to the run's log."""

    def __init__(self, context: dg.AssetExecutionContext, prefix: str = ""):
        self.context, self.prefix = context, prefix

    def __call__(self, msg: str) -> None:
        self.context.log.info(f"{self.prefix}{msg}")


@contextmanager
def timed(log, what: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    log(f"{what}: {time.perf_counter() - t0:.1f} s")
