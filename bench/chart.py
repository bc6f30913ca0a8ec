#!/usr/bin/env python3
"""Draws delivery latency percentiles against delivery rate from the `sweep-<rate>` fanout
runs of a bench/run.sh results file, as a hand-written SVG (standard library only).

    python3 bench/chart.py [bench/results.json] [bench/latency.svg]

x: deliveries per second the admins actually received (linear); y: latency from the
set_status send to the admin socket, in ms (log scale); one line per percentile (p50, p99,
p99.9, max) plus the targets (p99 <= 10 ms and p99.9 <= 25 ms at 200k deliveries/s).
"""

import json
import math
import sys
from xml.sax.saxutils import escape

W, H = 860, 520
LEFT, RIGHT, TOP, BOTTOM = 80, 190, 60, 70
SERIES = [
    ("p50_ms", "p50", "#1f77b4"),
    ("p99_ms", "p99", "#ff7f0e"),
    ("p999_ms", "p99.9", "#d62728"),
    ("max_ms", "max", "#7f7f7f"),
]


def points(doc):
    pts = []
    for run in doc.get("runs", []):
        if not run["name"].startswith("sweep-") or not run.get("result"):
            continue
        res = run["result"]
        f = res.get("figures", {})
        lat = f.get("latency", {})
        if not lat.get("count"):
            continue
        pts.append({
            "asked": res.get("params", {}).get("rate"),
            "rate": f.get("deliveries_per_sec", 0),
            "lat": lat,
            "ok": res.get("ok"),
            "admins": res.get("params", {}).get("admins"),
            "bound": res.get("cpu", {}).get("loadgen_bottleneck"),
        })
    pts.sort(key=lambda p: p["rate"])
    return pts


def nice_step(span, ticks=6):
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_rate(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def fmt_ms(v):
    return f"{v:g}"


def svg(doc):
    pts = points(doc)
    m = doc.get("machine", {})
    title = "presence-hub: status change -> admin socket latency vs delivery rate"
    sub = (f"size {doc.get('size')}, {doc.get('profile')} build, {m.get('nproc')} cores "
           f"{m.get('cpu_model')}, {doc.get('started_at')}, commit {doc.get('git_commit')}")
    if pts:
        sub += f", {pts[0]['admins']} admins subscribed to all"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16">{escape(title)}</text>',
           f'<text x="{W / 2}" y="42" text-anchor="middle" fill="#555">{escape(sub)}</text>']
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    if not pts:
        out.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no sweep runs in '
                   f'the results (run bench/run.sh)</text></svg>')
        return "\n".join(out)

    xmax_data = max(max(p["rate"] for p in pts), 200_000)
    xstep = nice_step(xmax_data)
    xmax = math.ceil(xmax_data * 1.05 / xstep) * xstep
    values = [p["lat"][k] for p in pts for k, _, _ in SERIES if p["lat"].get(k)]
    values += [10, 25]
    lo = 10 ** math.floor(math.log10(max(min(values), 1e-3)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10

    def x(v):
        return LEFT + pw * v / xmax

    def y(v):
        v = max(v, lo)
        return TOP + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    # Grid and axes.
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    d = lo
    while d <= hi * 1.0001:
        for mult in (1, 2, 5):
            v = d * mult
            if v > hi * 1.0001:
                break
            yy = y(v)
            major = mult == 1
            out.append(f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + pw}" y2="{yy:.1f}" '
                       f'stroke="{"#ccc" if major else "#eee"}"/>')
            out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" '
                       f'fill="{"#000" if major else "#888"}">{fmt_ms(round(v, 6))}</text>')
        d *= 10
    v = 0
    while v <= xmax + 1e-9:
        xx = x(v)
        out.append(f'<line x1="{xx:.1f}" y1="{TOP}" x2="{xx:.1f}" y2="{TOP + ph}" stroke="#eee"/>')
        out.append(f'<text x="{xx:.1f}" y="{TOP + ph + 18}" text-anchor="middle">{fmt_rate(v)}</text>')
        v += xstep
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 22}" text-anchor="middle">deliveries per '
               f'second received by the admins (status changes/s x admins)</text>')
    out.append(f'<text x="18" y="{TOP + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {TOP + ph / 2})">latency, ms (log scale)</text>')

    # Targets at 200k deliveries/s.
    tx = x(200_000)
    out.append(f'<line x1="{tx:.1f}" y1="{TOP}" x2="{tx:.1f}" y2="{TOP + ph}" stroke="#2ca02c" '
               f'stroke-dasharray="4 4"/>')
    for val, label, color in ((10, "p99 target 10 ms", "#ff7f0e"), (25, "p99.9 target 25 ms", "#d62728")):
        yy = y(val)
        out.append(f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + pw}" y2="{yy:.1f}" stroke="{color}" '
                   f'stroke-dasharray="6 4" stroke-width="1"/>')
        out.append(f'<circle cx="{tx:.1f}" cy="{yy:.1f}" r="5" fill="none" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + 6}" y="{yy - 4:.1f}" fill="{color}">{label}</text>')

    # Series.
    for key, label, color in SERIES:
        coords = [(x(p["rate"]), y(p["lat"][key])) for p in pts if p["lat"].get(key) is not None]
        if len(coords) > 1:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for (cx, cy), p in zip(coords, pts):
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{color}">'
                       f'<title>{label} {p["lat"][key]} ms at {p["rate"]:.0f} deliveries/s '
                       f'(asked {p["asked"]})</title></circle>')
    # Runs that failed their checks (FAIL) or were loadgen-bound (LG).
    marked = False
    for p in pts:
        notes = []
        if not p["ok"]:
            notes.append("FAIL")
        if p["bound"]:
            notes.append("LG")
        if notes:
            marked = True
            cx = x(p["rate"])
            out.append(f'<text x="{cx:.1f}" y="{TOP + ph - 6}" text-anchor="middle" fill="#b00" '
                       f'font-size="10">{escape(" ".join(notes))}</text>')

    # Legend.
    lx, ly = LEFT + pw + 20, TOP + 10
    for i, (_, label, color) in enumerate(SERIES):
        yy = ly + i * 22
        out.append(f'<line x1="{lx}" y1="{yy}" x2="{lx + 24}" y2="{yy}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<circle cx="{lx + 12}" cy="{yy}" r="3.5" fill="{color}"/>')
        out.append(f'<text x="{lx + 32}" y="{yy + 4}">{label}</text>')
    yy = ly + len(SERIES) * 22 + 10
    out.append(f'<text x="{lx}" y="{yy}" fill="#555">asked rates:</text>')
    for i, p in enumerate(pts):
        out.append(f'<text x="{lx}" y="{yy + 16 * (i + 1)}" fill="#555">{fmt_rate(p["asked"] or 0)}/s '
                   f'-> {p["rate"] / 1e3:,.1f}k/s</text>')
    if marked:
        yy += 16 * (len(pts) + 2)
        for i, line in enumerate(("LG: the load generator", "used more CPU than the", "hub (a lower bound)",
                                  "FAIL: loss, disorder or", "errors in that run")):
            out.append(f'<text x="{lx}" y="{yy + 14 * i}" fill="#b00" font-size="11">{line}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/results.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "bench/latency.svg"
    with open(src) as f:
        doc = json.load(f)
    with open(dst, "w") as f:
        f.write(svg(doc) + "\n")
    print(f"chart: {dst} ({len(points(doc))} sweep points)")


if __name__ == "__main__":
    main()
