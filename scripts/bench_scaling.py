"""The "How cost grows" section of BENCHMARKS.md (from the `local_scaling` line of scripts/bench) and its charts,
hand-written SVG (no plotting library on the bench machine), written to docs/bench/scaling-*.svg."""
import math, os

BLUE, ORANGE = "#1f77b4", "#e4731b"


def human(v):
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            x = v / div
            return f"{x:.1f}".rstrip("0").rstrip(".") + unit
    return f"{v:.0f}" if abs(v) >= 10 or v == 0 else f"{v:.1f}"


def size(b):
    return f"{b / 1024:.0f} KiB" if b >= 1024 else f"{b:.0f} B"


def nice_max(v):
    if v <= 0:
        return 1
    e = 10 ** math.floor(math.log10(v))
    return next(m * e for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * e >= v)


def panel(x0, y0, w, h, title, ylabel, xs, xlabels, series, xname):
    """One chart at (x0, y0): log x axis at the points `xs`, linear y from 0; series = [(name, colour, dash, ys)]."""
    out = []
    left, right, top, bottom = 70, 15, 30, 45
    pw, ph = w - left - right, h - top - bottom
    ymax = nice_max(max([y for *_, ys in series for y in ys if y is not None] or [1]) * 1.4)  # headroom for the legend
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    span = (hi - lo) or 1
    X = lambda x: x0 + left + 20 + (math.log10(x) - lo) / span * (pw - 40)
    Y = lambda y: y0 + top + ph - y / ymax * ph
    out.append(f'<text x="{x0 + left + pw / 2}" y="{y0 + 18}" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<rect x="{x0 + left}" y="{y0 + top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{x0 + left}" x2="{x0 + left + pw}" y1="{Y(y):.1f}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + left - 6}" y="{Y(y) + 4:.1f}" text-anchor="end">{human(y)}</text>')
    for x, label in zip(xs, xlabels):
        out.append(f'<line x1="{X(x):.1f}" x2="{X(x):.1f}" y1="{y0 + top + ph}" y2="{y0 + top + ph + 5}" stroke="#888"/>')
        out.append(f'<text x="{X(x):.1f}" y="{y0 + top + ph + 18}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{x0 + left + pw / 2}" y="{y0 + h - 6}" text-anchor="middle" fill="#555">{xname} (log scale)</text>')
    out.append(f'<text transform="translate({x0 + 14},{y0 + top + ph / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>')
    out.append(f'<rect x="{x0 + left + 4}" y="{y0 + top + 3}" width="{max(len(n) for n, *_ in series) * 7 + 44}" '
               f'height="{16 * len(series) + 4}" fill="white" stroke="#ccc"/>')
    for n, (name, colour, dash, ys) in enumerate(series):
        pts = [(X(x), Y(y)) for x, y in zip(xs, ys) if y is not None]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        for px, py in pts:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"/>')
        ly = y0 + top + 14 + 16 * n
        out.append(f'<line x1="{x0 + left + 10}" x2="{x0 + left + 34}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="2" stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{x0 + left + 40}" y="{ly}">{name}</text>')
    return out


def svg(path, xname, panels):
    w, h = 460, 320
    body = []
    for i, p in enumerate(panels):
        body += panel(i * w, 0, w, h, *p, xname)
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(panels)}" height="{h}" '
                f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n')
        f.write("\n".join(body) + "\n</svg>\n")


def section(d, root):
    print("\n## How cost grows\n")
    if d is None:
        print("Not run (`tidings-bench local_scaling`).")
        return
    subs, pay, back = d["subscriptions"], d["payload"], d["backlog"]
    out = os.path.join(root, "docs", "bench")
    os.makedirs(out, exist_ok=True)
    ks = [p["subscriptions"] for p in subs]
    svg(os.path.join(out, "scaling-subscriptions.svg"), "subscriptions", [
        ("Deliveries/s by subscriptions", "deliveries/s", ks, [str(k) for k in ks],
         [("tidings", BLUE, "", [p["tidings_deliveries_per_s"] for p in subs]),
          ("raw tokio baseline", ORANGE, "6,4", [p["baseline_deliveries_per_s"] for p in subs])]),
        ("Peak RSS by subscriptions", "MB", ks, [str(k) for k in ks],
         [("tidings", BLUE, "", [p["tidings_peak_rss_mb"] for p in subs]),
          ("raw tokio baseline", ORANGE, "6,4", [p["baseline_peak_rss_mb"] for p in subs])]),
    ])
    bs = [p["payload_bytes"] for p in pay]
    svg(os.path.join(out, "scaling-payload.svg"), "payload", [
        ("Deliveries/s by payload size", "deliveries/s", bs, [size(b) for b in bs],
         [("tidings", BLUE, "", [p["tidings_deliveries_per_s"] for p in pay]),
          ("raw tokio baseline", ORANGE, "6,4", [p["baseline_deliveries_per_s"] for p in pay])]),
        ("Payload MB/s delivered", "MB/s", bs, [size(b) for b in bs],
         [("tidings", BLUE, "", [p["tidings_deliveries_per_s"] * p["payload_bytes"] / 1e6 for p in pay]),
          ("raw tokio baseline", ORANGE, "6,4", [p["baseline_deliveries_per_s"] * p["payload_bytes"] / 1e6 for p in pay])]),
    ])
    qs = [p["queued"] for p in back]
    svg(os.path.join(out, "scaling-backlog.svg"), "messages queued", [
        ("RSS per queued message (payload included)", "bytes", qs, [human(q) for q in qs],
         [("tidings (stalled subscription)", BLUE, "", [p["bytes_per_queued_msg"] for p in back]),
          ("baseline (unbounded mpsc of Bytes)", ORANGE, "6,4", [p["baseline_bytes_per_queued_msg"] for p in back])]),
        ("Live subscription beside the backlog", "deliveries/s", qs, [human(q) for q in qs],
         [("beside the backlog", BLUE, "", [p["live_msgs_per_s_beside_backlog"] for p in back]),
          ("alone, fresh bus", ORANGE, "6,4", [p["live_msgs_per_s_alone"] for p in back])]),
    ])

    print("`tidings-bench local_scaling`: the in-memory bus beside the raw-tokio fan-out baseline of `local_fanout*` (one")
    print("encode into `Bytes`, a bounded mpsc of 1,024 per subscriber, decode) along three axes. Every point runs in a")
    print(f"child process of its own, so its peak RSS (`VmHWM`, start-up included) is that point's; {d['rounds']} interleaved")
    print("rounds, medians. Page faults per message are minor faults (memory fresh from the kernel) in the measured run.")
    print("Single points swing with this machine's load (other sessions share its 2 cores); a row's two sides ran in")
    print("alternating processes, close in time, so its `vs baseline` is steadier than a comparison between rows.\n")
    print("![deliveries/s and peak RSS by subscriptions](docs/bench/scaling-subscriptions.svg)\n")
    print("| subscriptions | messages | tidings deliveries/s | baseline deliveries/s | vs baseline | tidings publishes/s "
          "| tidings peak RSS MB | baseline peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for p in subs:
        print(f"| {p['subscriptions']} | {p['messages']:,} | {p['tidings_deliveries_per_s']:,} | {p['baseline_deliveries_per_s']:,} "
              f"| {p['vs_baseline']:.2f} | {p['tidings_publish_msgs_per_s']:,} | {p['tidings_peak_rss_mb']} | {p['baseline_peak_rss_mb']} |")
    print("\n![deliveries/s by payload size](docs/bench/scaling-payload.svg)\n")
    print("| payload | messages | tidings deliveries/s | baseline deliveries/s | vs baseline | tidings page faults/msg "
          "| baseline page faults/msg | tidings peak RSS MB | baseline peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in pay:
        print(f"| {p['payload_bytes']:,.0f} B | {p['messages']:,} | {p['tidings_deliveries_per_s']:,} | {p['baseline_deliveries_per_s']:,} "
              f"| {p['vs_baseline']:.2f} | {p['tidings_page_faults_per_msg']} | {p['baseline_page_faults_per_msg']} "
              f"| {p['tidings_peak_rss_mb']} | {p['baseline_peak_rss_mb']} |")
    print("\n![RSS per queued message and live throughput by backlog](docs/bench/scaling-backlog.svg)\n")
    print("| queued | bytes/queued msg | baseline bytes/queued msg | fill msgs/s | page faults/1k queued | peak RSS MB "
          "| baseline peak RSS MB | live beside backlog msgs/s | live alone msgs/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in back:
        print(f"| {p['queued']:,} | {p['bytes_per_queued_msg']} | {p['baseline_bytes_per_queued_msg']} | {p['fill_msgs_per_s']:,} "
              f"| {p['fill_page_faults_per_1k']} | {p['peak_rss_mb']} | {p['baseline_peak_rss_mb']} "
              f"| {p['live_msgs_per_s_beside_backlog']:,} | {p['live_msgs_per_s_alone']:,} | {p['live_ratio']:.2f} |")
    print(f"\nBacklog: {d['backlog_note']}.\n")

    # What the figures say, from this run's figures (each sentence is conditioned on what it claims).
    s0, s1 = subs[0], subs[-1]
    text = [f"With subscriptions, tidings' deliveries/s go from {s0['tidings_deliveries_per_s']:,} to "
            f"{s1['tidings_deliveries_per_s']:,} ({s1['tidings_deliveries_per_s'] / s0['tidings_deliveries_per_s']:.1f}x) "
            f"from {s0['subscriptions']} to {s1['subscriptions']}, the baseline's "
            f"{s1['baseline_deliveries_per_s'] / s0['baseline_deliveries_per_s']:.1f}x, so the ratio moves from "
            f"{s0['vs_baseline']:.2f} to {s1['vs_baseline']:.2f}: one publish stores a copy (sharing the payload) in every "
            f"subscription's queue with all of their locks held, and publishes/s fall from {s0['tidings_publish_msgs_per_s']:,} "
            f"to {s1['tidings_publish_msgs_per_s']:,}, about 1/{s0['tidings_publish_msgs_per_s'] / s1['tidings_publish_msgs_per_s']:.0f}"]
    if abs(s1["tidings_publish_msgs_per_s"] * s1["subscriptions"] / s1["tidings_deliveries_per_s"] - 1) < 0.2:
        text[0] += (f"; at {s1['subscriptions']} subscriptions publishes/s times subscriptions is about the deliveries/s, so "
                    "the one publisher is the limit, not the consumers")
    text[0] += "."
    peak = max(subs, key=lambda p: p["tidings_peak_rss_mb"])
    text.append(f"Peak RSS reaches {peak['tidings_peak_rss_mb']} MB (at {peak['subscriptions']} subscriptions, "
                f"{peak['tidings_page_faults_per_msg']} page faults per message) against the baseline's "
                f"{max(p['baseline_peak_rss_mb'] for p in subs)} MB at most: every subscription keeps its own queue entry "
                "per message, and while the baseline's channels hold 1,024 messages each, a tidings subscription's "
                "backlog may grow to its `max_backlog` (100,000) when its consumer falls behind.")
    p0, p1 = pay[0], pay[-1]
    extra = 1e6 / p1["tidings_deliveries_per_s"] - 1e6 / p1["baseline_deliveries_per_s"]
    t = (f"With payload size both sides slow down (each encodes and decodes the JSON once); at {size(p1['payload_bytes'])} "
         f"tidings runs at {p1['vs_baseline']:.2f} of the baseline ({extra:.0f} µs more per message)")
    if p1["tidings_page_faults_per_msg"] > 2 * max(p1["baseline_page_faults_per_msg"], 0.1):
        t += (f" and takes {p1['tidings_page_faults_per_msg']} page faults per message against the baseline's "
              f"{p1['baseline_page_faults_per_msg']}: fresh memory from the kernel for every large payload (a payload over "
              "1 KiB is encoded into a growing buffer and copied into an allocation of its own)")
    text.append(t + ".")
    bpm = [p["bytes_per_queued_msg"] for p in back]
    ratios = ", ".join(f"{p['live_ratio']:.2f}" for p in back)
    if max(bpm) <= 1.25 * min(bpm):
        text.append(f"The backlog does not bend the memory curve: {', '.join(map(str, bpm))} bytes per queued message at "
                    f"{', '.join(human(q) for q in qs)} (payload included; the baseline's bare channel: "
                    f"{', '.join(str(p['baseline_bytes_per_queued_msg']) for p in back)}), so RSS grows linearly with the "
                    f"backlog, to {back[-1]['peak_rss_mb']:,} MB at {human(qs[-1])}; the live subscription beside it runs at "
                    f"{ratios} of its rate alone.")
    else:
        text.append(f"Bytes per queued message change with the backlog: {', '.join(map(str, bpm))} at "
                    f"{', '.join(human(q) for q in qs)}; the live subscription beside it runs at {ratios} of its rate alone.")
    print(" ".join(text))
