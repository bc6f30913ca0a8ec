#!/usr/bin/env python3
"""The "versus" tables of `bench/run.sh --compare`: the hub and its benchmark peers side by side.

    python3 bench/versus.py bench/versus.json > bench/versus.md

Reads the results JSON (one `ack-fanout` run per server, admin count and round; one
`connections` run per server) and prints markdown: deliveries/s (min-max over the rounds,
median), change -> admin latency p50/p99 (median over the rounds), idle bytes per agent socket,
logins/s, acks/s, server CPU per delivery and per change, and the loss/order checks.
"""
import json
import statistics
import sys

NAMES = {
    "hub": "presence-hub",
    "hub-async": "presence-hub, `--durability async`",
    "uws": "uWebSockets.js pub/sub (npm `uwebsockets`)",
    "tungstenite": "tokio-tungstenite hub (broadcast)",
    "raw": "raw ceiling (pre-built frames, one write per socket per batch)",
}


def fmt_int(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_range(values):
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med / 1e6:.2f}M" if med >= 1e5 else f"{med:,.0f}"
    lo, hi = min(values), max(values)
    if med >= 1e5:
        return f"{lo / 1e6:.2f}-{hi / 1e6:.2f}M (median {med / 1e6:.2f}M)"
    return f"{lo:,.0f}-{hi:,.0f} (median {med:,.0f})"


def median(values):
    return statistics.median(values) if values else None


def fmt(v, digits=2, unit=""):
    return "—" if v is None else f"{v:.{digits}f}{unit}"


def main():
    doc = json.load(open(sys.argv[1]))
    servers = []
    runs = {}
    for r in doc["runs"]:
        server = r.get("server", "hub")
        if server not in servers:
            servers.append(server)
        res = r.get("result") or {}
        runs.setdefault(server, []).append((r, res))

    def fan(server, admins, rate=0):
        out = []
        for r, res in runs.get(server, []):
            if (res.get("scenario") == "ack-fanout" and res["params"]["admins"] == admins
                    and res["params"].get("rate", 0) == rate):
                out.append((r, res))
        return out

    paced = sorted(
        {(res["params"]["rate"], res["params"]["admins"]) for rs in runs.values() for _, res in rs
         if res.get("scenario") == "ack-fanout" and res["params"].get("rate", 0) > 0}
    )

    def idle(server):
        for r, res in runs.get(server, []):
            if res.get("scenario") == "connections":
                return res
        return None

    admin_counts = sorted(
        {res["params"]["admins"] for rs in runs.values() for _, res in rs
         if res.get("scenario") == "ack-fanout"},
        reverse=True,
    )
    m = doc["machine"]
    print(f"# presence-hub versus its benchmark peers ({doc['started_at']})\n")
    print(
        f"`{doc['command']}`, {doc['duration_secs']} s, commit {doc['git_commit']} "
        f"(git_dirty={str(doc['git_dirty']).lower()}); "
        f"{m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB, kernel {m['kernel']}; "
        f"load average at the start {m.get('loadavg_start') or '?'}, at the end "
        f"{m.get('loadavg_end') or '?'}. Every server and the load generator share the cores; "
        "each run starts a fresh server process.\n"
    )
    big = [a for a in admin_counts if a > 1]
    header = ["server"]
    for a in big:
        header += [f"deliveries/s, {a} admins", f"p50 / p99 ms, {a} admins"]
    for rate, a in paced:
        header.append(f"p50 / p99 ms at {rate / 1000:,.0f}k deliveries/s, {a} admins")
    header += ["idle bytes per agent socket", "logins/s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for s in servers:
        row = [NAMES.get(s, s)]
        for a in big:
            rs = fan(s, a)
            row.append(fmt_range([res["figures"]["deliveries_per_sec"] for _, res in rs]))
            p50 = median([res["figures"]["latency"].get("p50_ms") for _, res in rs
                          if res["figures"]["latency"].get("count")])
            p99 = median([res["figures"]["latency"].get("p99_ms") for _, res in rs
                          if res["figures"]["latency"].get("count")])
            row.append(f"{fmt(p50)} / {fmt(p99)}")
        for rate, a in paced:
            rs = fan(s, a, rate)
            lat = [res["figures"]["latency"] for _, res in rs if res["figures"]["latency"].get("count")]
            got = [res["figures"]["deliveries_per_sec"] for _, res in rs]
            short = any(g < rate * 0.95 for g in got)
            p99s = [x["p99_ms"] for x in lat]
            spread = f" (p99 {fmt(min(p99s))}-{fmt(max(p99s))})" if len(p99s) > 1 else ""
            row.append(
                f"{fmt(median([x['p50_ms'] for x in lat]))} / {fmt(median(p99s))}{spread}"
                + (" (rate not reached)" if short else "")
                if lat else "—"
            )
        i = idle(s)
        if i:
            f = i["figures"]
            row.append(f"{fmt_int(f.get('hub_bytes_per_connection'))} ({f['connected']:,} sockets)")
            row.append(fmt_int(f.get("logins_per_sec")))
        else:
            row += ["—", "—"]
        print("| " + " | ".join(row) + " |")

    print("\n## Cost per delivery and per change (server CPU, median over the rounds)\n")
    header = ["server"]
    for a in admin_counts:
        header += [f"{a} admin{'s' if a > 1 else ''}: µs/delivery", "µs/change", "acks/s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for s in servers:
        row = [NAMES.get(s, s)]
        for a in admin_counts:
            rs = fan(s, a)
            row.append(fmt(median([res["figures"].get("hub_us_per_delivery") for _, res in rs
                                   if res["figures"].get("hub_us_per_delivery") is not None]), 3))
            row.append(fmt(median([res["figures"].get("hub_us_per_change") for _, res in rs
                                   if res["figures"].get("hub_us_per_change") is not None]), 1))
            row.append(fmt_int(median([res["figures"]["acks_per_sec"] for _, res in rs])))
        print("| " + " | ".join(row) + " |")

    if 1 in admin_counts and big:
        print(
            "\nMarginal cost of one more admin delivery: (µs/change at N admins - µs/change at 1 "
            "admin) / (N - 1), which takes the per-change work (parse, state, ack, "
            "serialization, the store) out.\n"
        )
        header = ["server"] + [f"{a} admins: marginal µs per delivery" for a in big]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for s in servers:
            one = median([res["figures"].get("hub_us_per_change") for _, res in fan(s, 1)
                          if res["figures"].get("hub_us_per_change") is not None])
            row = [NAMES.get(s, s)]
            for a in big:
                n = median([res["figures"].get("hub_us_per_change") for _, res in fan(s, a)
                            if res["figures"].get("hub_us_per_change") is not None])
                row.append("—" if one is None or n is None else f"{(n - one) / (a - 1):.3f}")
            print("| " + " | ".join(row) + " |")

    print("\n## Checks\n")
    print("| server | runs | missing | out of order + seq gaps + version jumps | admins closed | failed runs | load generator used more CPU than the server |")
    print("|---|---|---|---|---|---|---|")
    for s in servers:
        rs = [(r, res) for r, res in runs.get(s, []) if res.get("scenario") == "ack-fanout"]
        missing = sum(res["figures"]["missing"] for _, res in rs)
        disorder = sum(res["figures"]["out_of_order"] + res["figures"]["seq_gaps"]
                       + res["figures"]["version_jumps"] for _, res in rs)
        closed = sum(res["figures"]["slow_dropped"] + res["figures"]["admins_closed_otherwise"]
                     for _, res in rs)
        failed = [r["name"] for r, res in runs.get(s, []) if r["exit"] != 0 or not res]
        lg = sum(1 for _, res in rs if (res.get("cpu") or {}).get("loadgen_bottleneck"))
        print(f"| {NAMES.get(s, s)} | {len(rs)} | {missing} | {disorder} | {closed} | "
              f"{', '.join(failed) or 'none'} | {lg} of {len(rs)} |")


if __name__ == "__main__":
    main()
