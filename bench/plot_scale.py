"""Draw the scale curve that ``bench/backup_bench.py --sizes`` measured (its JSON) as a PNG.

Run in an environment of its own, so matplotlib and numpy stay out of the project's (with numpy importable,
the neo4j driver imports it: about 16 MiB more in every export process, which is what the bench measures)::

    python3 -m uv run --no-project --with 'matplotlib>=3.8' python bench/plot_scale.py curve.json out.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(data_path: str, png_path: str) -> None:
    data = json.loads(open(data_path).read())
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs = data["nodes"]
    for name, points in data["series"].items():
        left.plot(xs, points["seconds"], marker="o", label=name)
        right.plot(xs, points["rss_mib"], marker="o", label=name)
    for ax, what in ((left, "time (s)"), (right, "peak RSS (MiB; neo4j-admin: its JVM)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("nodes (2 relationships each)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(data["title"])
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
