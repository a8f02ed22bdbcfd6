"""Draws a Grafana dashboard's panels from a live Prometheus, as Grafana lays them out.

Run by `cargo xtask dashboard` (xtask/src/dashboard.rs), which starts the servers and
the load; this script only queries and draws.

usage: dashboard.py DASHBOARD_JSON PROMETHEUS_URL FROM_EPOCH TO_EPOCH OUTPUT_PNG

Every target of every panel is queried over [FROM, TO] with `query_range`, with the
dashboard's variables set as Grafana's "All" sets them ($namespace and $pod to `.*`,
$__rate_interval to four scrape intervals). Stat panels show the last value, time
series panels one line per series, named by the target's legendFormat. Panel titles,
units and the 24-column grid come from the JSON itself.
"""

import json
import re
import sys
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

RATE_INTERVAL = "8s"
STEP = 4


def expand(expr):
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    return re.sub(r"\$\{?(namespace|pod)\}?", ".*", expr)


def query_range(base, expr, start, end):
    params = urllib.parse.urlencode(
        {"query": expand(expr), "start": start, "end": end, "step": STEP}
    )
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"query {expr!r}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def human(value, unit):
    if unit == "s":
        for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.1f} s"
    if unit in ("bytes", "decbytes", "Bps", "binBps"):
        suffix = "/s" if unit.endswith("ps") else ""
        for size, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}{suffix}"
        return f"{value:.0f} B{suffix}"
    return f"{value:.3g}"


def draw_stat(ax, panel, series):
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    ax.axis("off")
    if not series:
        ax.text(0.5, 0.45, "No data", ha="center", va="center", fontsize=16, color="#888")
        return
    values = [float(s["values"][-1][1]) for s in series if s["values"]]
    text = " / ".join(human(v, unit) for v in values)
    ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=22, weight="bold",
            color="#2a7f2a")


def draw_timeseries(ax, panel, lines):
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    if not lines:
        ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center",
                fontsize=12, color="#888")
    for name, points in lines:
        xs = [datetime.fromtimestamp(t, timezone.utc) for t, _ in points]
        ys = [float(v) for _, v in points]
        ax.plot(xs, ys, label=name, linewidth=1.2)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=7))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if unit:
        ax.set_ylabel(unit, fontsize=7)
    if lines:
        ax.legend(fontsize=6, loc="upper left")


def main():
    dashboard_path, base, start, end, output = sys.argv[1:6]
    dashboard = json.load(open(dashboard_path))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    # One grid row more at the top for the title.
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"]) + 1.2
    unit_h = 0.32
    fig = plt.figure(figsize=(16, bottom * unit_h))
    fig.suptitle(
        f"{dashboard['title']}: the dashboard's panels from a live Prometheus "
        "(cargo xtask dashboard)",
        fontsize=12,
        y=0.995,
    )

    def place(pos):
        # Grafana's grid: 24 columns, y grows downwards in rows of equal height.
        left = pos["x"] / 24 + 0.04
        width = pos["w"] / 24 - 0.05
        top = 1 - (pos["y"] + 1.2) / bottom - 0.025
        height = pos["h"] / bottom - 0.03
        return [left, top - height, width, height]

    for row in rows:
        pos = row["gridPos"]
        fig.text(0.01, 1 - (pos["y"] + 1.2) / bottom - 0.01, row["title"], fontsize=11,
                 weight="bold")
    for panel in panels:
        ax = fig.add_axes(place(panel["gridPos"]))
        ax.set_title(panel["title"], fontsize=9, loc="left")
        results = []
        for target in panel.get("targets", []):
            for series in query_range(base, target["expr"], start, end):
                results.append(
                    (legend(target.get("legendFormat"), series["metric"]), series)
                )
        if panel["type"] == "stat":
            draw_stat(ax, panel, [s for _, s in results])
        else:
            draw_timeseries(ax, panel, [(n, s["values"]) for n, s in results])
    fig.savefig(output, dpi=80)


if __name__ == "__main__":
    main()
