#!/usr/bin/env python3
"""Turns bench CSVs (nanoserve's and the HF peer's, one schema) into gnuplot
PNGs, markdown tables and docs/report.md.

    bench/report.py --results docs/results --report docs/report.md
    bench/report.py --results $OUT/results --summary          # short table only

Layout: every CSV under RESULTS/<kind>/ (kind = cpu or gpu) is read; plots and
RESULTS/<kind>/tables.md are written beside them. The report is
bench/report_template.md with its {{...}} fields filled from the data, so every
number in it comes from a CSV row and names the plot and table it is in.

Standard library only (the GPU machine and the dev machine both have python3,
neither is promised numpy); plots need gnuplot with the pngcairo terminal.
"""

import argparse
import collections
import csv
import glob
import math
import os
import re
import shutil
import subprocess
import sys

NUMERIC = {"params_m", "batch", "prompt_len", "shared_len", "output_len", "repeats",
           "total_ms", "total_ms_min", "total_ms_max", "ms_per_output_token", "ttft_ms",
           "decode_ms_per_step", "tokens_per_second", "prompt_tokens", "prompt_tokens_computed",
           "prompt_tokens_reused", "peak_mem_bytes", "reserved_mem_bytes", "weights_bytes"}
MIB = 1048576.0

# Colour per (engine, kv_cache); dash type per attention; point type per engine.
COLOURS = {("nanoserve", "off"): "#d62728", ("nanoserve", "on"): "#1f77b4",
           ("nanoserve", "prefix"): "#9467bd", ("hf", "off"): "#ff7f0e", ("hf", "on"): "#2ca02c"}
DASH = {"naive": 1, "fused": 2}
POINT = {"nanoserve": 7, "hf": 5}
BATCH_DASH = [1, 2, 3, 4, 5]
BATCH_POINT = [7, 5, 9, 11, 13]


def load_rows(results_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*", "*.csv"))):
        kind = os.path.basename(os.path.dirname(path))
        with open(path, newline="") as f:
            for raw in csv.DictReader(f):
                row = dict(raw)
                for k in NUMERIC:
                    if row.get(k) not in (None, ""):
                        row[k] = float(row[k])
                    else:
                        row[k] = float("nan")
                row["kind"] = kind
                row["csv"] = os.path.relpath(path, results_dir)
                rows.append(row)
    return rows


def model_name(spec):
    return spec.split(":", 1)[1] if spec.startswith("random:") else os.path.basename(spec.rstrip("/"))


def slug(*parts):
    return re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(parts)).strip("-").lower()


def attention_label(engine, attention):
    if engine == "hf":
        return {"naive": "eager", "fused": "sdpa"}.get(attention, attention)
    return attention


def series_title(r, with_batch=False):
    if r["engine"] == "hf":
        mode = "use_cache=%s" % ("True" if r["kv_cache"] == "on" else "False")
        name = "HF %s" % mode
    else:
        name = "nanoserve cache %s" % r["kv_cache"]
    name += " (%s)" % attention_label(r["engine"], r["attention"])
    if with_batch:
        name += " B=%d" % r["batch"]
    return name


def fmt(v, digits=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "%.*f" % (digits, v)


class Group:
    """The rows of one machine kind, model and dtype: one set of figures."""

    def __init__(self, kind, model, dtype, rows):
        self.kind, self.model, self.dtype, self.rows = kind, model, dtype, rows
        self.name = model_name(model)
        self.slug = slug(self.name, dtype)
        self.cards = sorted({r["card"] for r in rows})
        self.params_m = max(r["params_m"] for r in rows)

    def select(self, **where):
        return [r for r in self.rows if all(r[k] == v for k, v in where.items())]

    def title(self):
        return "%s (%.0fM, %s) on %s" % (self.name, self.params_m, self.dtype, " / ".join(self.cards))


def groups_of(rows):
    by = collections.OrderedDict()
    for r in sorted(rows, key=lambda r: (r["kind"], r["params_m"], r["model"], r["dtype"])):
        by.setdefault((r["kind"], r["model"], r["dtype"]), []).append(r)
    return [Group(k, m, d, rs) for (k, m, d), rs in by.items()]


# ---------------------------------------------------------------- gnuplot


def datablock(name, points):
    lines = ["$%s << EOD" % name]
    lines += [" ".join("%.6g" % v for v in p) for p in points]
    lines.append("EOD")
    return "\n".join(lines)


# The gnuplot to draw with: $GNUPLOT, else gnuplot on PATH. Without one (or
# with --no-plots) figures are named, so that the report and tables link them,
# but not drawn.
GNUPLOT = os.environ.get("GNUPLOT") or shutil.which("gnuplot") or shutil.which("gnuplot-nox")
DRAW = True


def run_gnuplot(script, png):
    if not DRAW:
        return
    proc = subprocess.run([GNUPLOT], input=script, text=True, capture_output=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit("report: gnuplot failed on %s" % png)


def sweep_figure(group, sweep, out_dir):
    """Prompt or output sweep: total time, time per token, memory, both modes on one axis."""
    rows = group.select(sweep=sweep)
    if not rows:
        return None
    xkey = "prompt_len" if sweep == "prompt" else "output_len"
    fixed = (("output = %d tokens" % rows[0]["output_len"]) if sweep == "prompt"
             else ("prompt = %d tokens" % rows[0]["prompt_len"]))
    series = collections.OrderedDict()
    for r in sorted(rows, key=lambda r: (r["engine"] != "nanoserve", r["attention"], r["kv_cache"], r[xkey])):
        series.setdefault((r["engine"], r["attention"], r["kv_cache"]), []).append(r)
    gpu = group.kind == "gpu"
    panels = [("total time (ms)", lambda r: r["total_ms"], True),
              ("time per output token (ms)", lambda r: r["ms_per_output_token"], True),
              ("peak memory (MiB)" if not gpu else "CUDA peak allocated (MiB)",
               lambda r: r["peak_mem_bytes"] / MIB, False)]
    if gpu:
        panels.append(("CUDA peak reserved (MiB)", lambda r: r["reserved_mem_bytes"] / MIB, False))
    png = "%s_%s.png" % (group.slug, sweep)
    script = ["set terminal pngcairo noenhanced size %d,480 font 'Sans,9'" % (440 * len(panels)),
              "set output '%s'" % os.path.join(out_dir, png)]
    for i, (key, rs) in enumerate(series.items()):
        script.append(datablock("s%d" % i, [[r[xkey]] + [p[1](r) for p in panels] for r in rs]))
    script += ["set multiplot layout 1,%d title '%s: %s sweep (%s), median of repeats'"
               % (len(panels), group.title().replace("'", ""), sweep, fixed),
               "set grid", "set logscale x 2", "set key top left opaque box font ',8' samplen 2 spacing 0.9",
               "set xlabel '%s length (tokens)'" % sweep]
    for col, (ylabel, _, logy) in enumerate(panels):
        script.append("set ylabel '%s'" % ylabel)
        script.append("set logscale y" if logy else "unset logscale y")
        script.append("set yrange [*:*]")  # memory: the growth above the weights shows
        plots = []
        for i, (key, rs) in enumerate(series.items()):
            engine, attention, mode = key
            plots.append("$s%d using 1:%d with linespoints lc rgb '%s' dt %d pt %d ps 0.8 lw 1.5 title '%s'"
                         % (i, col + 2, COLOURS.get((engine, mode), "#000000"), DASH.get(attention, 3),
                            POINT.get(engine, 3), series_title(rs[0])))
        script.append("plot " + ", \\\n  ".join(plots))
    script.append("unset multiplot")
    run_gnuplot("\n".join(script), png)
    return png


def prefix_figures(group, out_dir):
    """Part C, one figure per attention kind: time, speedup, tokens computed, memory vs shared length."""
    pngs = []
    for attention in sorted({r["attention"] for r in group.select(sweep="prefix")}):
        rows = group.select(sweep="prefix", attention=attention)
        batches = sorted({int(r["batch"]) for r in rows})
        series = collections.OrderedDict()
        for r in sorted(rows, key=lambda r: (r["engine"] != "nanoserve", r["kv_cache"], r["batch"], r["shared_len"])):
            series.setdefault((r["engine"], r["kv_cache"], int(r["batch"])), []).append(r)
        png = "%s_prefix_%s.png" % (group.slug, attention)
        script = ["set terminal pngcairo noenhanced size 1300,900 font 'Sans,9'",
                  "set output '%s'" % os.path.join(out_dir, png)]
        for i, (key, rs) in enumerate(series.items()):
            script.append(datablock("s%d" % i, [[r["shared_len"], r["total_ms"], r["prompt_tokens"],
                                                 r["prompt_tokens_computed"], r["peak_mem_bytes"] / MIB]
                                                for r in rs]))
        speed = []
        for b in batches:
            on = {r["shared_len"]: r for r in rows if r["engine"] == "nanoserve" and r["kv_cache"] == "on" and r["batch"] == b}
            pre = {r["shared_len"]: r for r in rows if r["engine"] == "nanoserve" and r["kv_cache"] == "prefix" and r["batch"] == b}
            pts = [[s, on[s]["total_ms"] / pre[s]["total_ms"]] for s in sorted(on) if s in pre]
            speed.append((b, pts))
            script.append(datablock("sp%d" % b, pts))
        if not any(pts for _, pts in speed):
            continue  # no shared length with both modes measured: nothing to compare
        suffix = int(rows[0]["prompt_len"] - rows[0]["shared_len"])
        script += ["set multiplot layout 2,2 title '%s: Part C, batches sharing a prefix (+%d own tokens per prompt, %d output; attention %s)'"
                   % (group.title().replace("'", ""), suffix, int(rows[0]["output_len"]), attention),
                   "set grid", "set key top left opaque box font ',8' samplen 2 spacing 0.9",
                   "set xlabel 'shared prefix length (tokens)'"]

        def style(key):
            engine, mode, b = key
            k = batches.index(b) if b in batches else 0
            return "lc rgb '%s' dt %d pt %d ps 0.8 lw 1.5" % (COLOURS.get((engine, mode), "#000"),
                                                            BATCH_DASH[k % 5], BATCH_POINT[k % 5])

        def plot_all(col):
            return "plot " + ", \\\n  ".join(
                "$s%d using 1:%d with linespoints %s title '%s'" % (i, col, style(k), series_title(rs[0], True))
                for i, (k, rs) in enumerate(series.items()))

        script += ["set ylabel 'total time for the batch (ms)'", "set logscale y", plot_all(2)]
        script += ["unset logscale y", "set yrange [0:*]",
                   "set ylabel 'speedup of prefix reuse (cache on time / prefix time)'",
                   "plot " + ", \\\n  ".join("$sp%d using 1:2 with linespoints lc rgb '#9467bd' dt %d pt %d lw 1.5 title 'B=%d'"
                                             % (b, BATCH_DASH[k % 5], BATCH_POINT[k % 5], b)
                                             for k, (b, pts) in enumerate(speed) if pts) + ", 1 with lines lc rgb '#888888' dt 3 title 'no gain'"]
        script += ["set ylabel 'prompt tokens (asked = cache on; computed = prefix)'", "set logscale y", "set yrange [*:*]",
                   "plot " + ", \\\n  ".join(
                       "$s%d using 1:%d with linespoints %s title '%s'"
                       % (i, 3 if k[1] == "on" else 4, style(k),
                          ("asked B=%d" % k[2]) if k[1] == "on" else ("computed with reuse B=%d" % k[2]))
                       for i, (k, rs) in enumerate(series.items()) if k[0] == "nanoserve")]
        script += ["unset logscale y", "set yrange [*:*]",
                   "set ylabel '%s'" % ("CUDA peak allocated (MiB)" if group.kind == "gpu" else "peak memory (MiB)"),
                   plot_all(5), "unset multiplot"]
        run_gnuplot("\n".join(script), png)
        pngs.append(png)
    return pngs


# ---------------------------------------------------------------- tables


def table(headers, body, align=None):
    align = align or ["---:"] * len(headers)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(out)


def full_table(rows):
    headers = ["engine", "model", "dtype", "attention", "sweep", "kv_cache", "batch", "prompt", "shared",
               "output", "reps", "total ms", "min", "max", "ms/token", "ttft ms", "decode ms/step",
               "computed/asked", "peak MiB", "reserved MiB", "weights MiB"]
    body = []
    for r in rows:
        body.append([r["engine"], model_name(r["model"]), r["dtype"], attention_label(r["engine"], r["attention"]),
                     r["sweep"], r["kv_cache"], int(r["batch"]), int(r["prompt_len"]), int(r["shared_len"]),
                     int(r["output_len"]), int(r["repeats"]), fmt(r["total_ms"]), fmt(r["total_ms_min"]),
                     fmt(r["total_ms_max"]), fmt(r["ms_per_output_token"], 2), fmt(r["ttft_ms"]),
                     fmt(r["decode_ms_per_step"], 2),
                     "%d/%d" % (r["prompt_tokens_computed"], r["prompt_tokens"]),
                     fmt(r["peak_mem_bytes"] / MIB), fmt(r["reserved_mem_bytes"] / MIB),
                     fmt(r["weights_bytes"] / MIB)])
    return table(headers, body, ["---"] * 6 + ["---:"] * (len(headers) - 6))


def sweep_table(group, sweep, engine, attention):
    xkey = "prompt_len" if sweep == "prompt" else "output_len"
    rows = group.select(sweep=sweep, engine=engine, attention=attention)
    off = {r[xkey]: r for r in rows if r["kv_cache"] == "off"}
    on = {r[xkey]: r for r in rows if r["kv_cache"] == "on"}
    if not off and not on:
        return None
    gpu = group.kind == "gpu"
    headers = [sweep + " len", "off total ms", "on total ms", "speedup off/on", "off ms/token",
               "on ms/token", "off peak MiB", "on peak MiB"] + (["off reserved MiB", "on reserved MiB"] if gpu else [])
    body = []
    for x in sorted(set(off) | set(on)):
        a, b = off.get(x), on.get(x)
        g = lambda r, k, d=1, s=1.0: fmt(r[k] / s, d) if r else "-"
        row = [int(x), g(a, "total_ms"), g(b, "total_ms"),
               ("%.2fx" % (a["total_ms"] / b["total_ms"])) if a and b else "-",
               g(a, "ms_per_output_token", 2), g(b, "ms_per_output_token", 2),
               g(a, "peak_mem_bytes", 1, MIB), g(b, "peak_mem_bytes", 1, MIB)]
        if gpu:
            row += [g(a, "reserved_mem_bytes", 1, MIB), g(b, "reserved_mem_bytes", 1, MIB)]
        body.append(row)
    return table(headers, body)


def prefix_table(group, attention):
    rows = group.select(sweep="prefix", attention=attention)
    if not rows:
        return None
    key = lambda r: (int(r["batch"]), int(r["shared_len"]))
    on = {key(r): r for r in rows if r["engine"] == "nanoserve" and r["kv_cache"] == "on"}
    pre = {key(r): r for r in rows if r["engine"] == "nanoserve" and r["kv_cache"] == "prefix"}
    hf = {key(r): r for r in rows if r["engine"] == "hf" and r["kv_cache"] == "on"}
    headers = ["batch", "shared", "on ms", "prefix ms", "speedup", "asked", "computed (prefix)",
               "reused", "on peak MiB", "prefix peak MiB"] + (["HF use_cache ms"] if hf else [])
    body = []
    for k in sorted(set(on) | set(pre)):
        a, b = on.get(k), pre.get(k)
        row = [k[0], k[1], fmt(a["total_ms"]) if a else "-", fmt(b["total_ms"]) if b else "-",
               ("%.2fx" % (a["total_ms"] / b["total_ms"])) if a and b else "-",
               int((a or b)["prompt_tokens"]), int(b["prompt_tokens_computed"]) if b else "-",
               int(b["prompt_tokens_reused"]) if b else "-",
               fmt(a["peak_mem_bytes"] / MIB) if a else "-", fmt(b["peak_mem_bytes"] / MIB) if b else "-"]
        if hf:
            row.append(fmt(hf[k]["total_ms"]) if k in hf else "-")
        body.append(row)
    return table(headers, body)


def peer_table(group, sweep):
    """nanoserve beside HF at the same points (same attention, same mode)."""
    xkey = "prompt_len" if sweep == "prompt" else "output_len"
    hf = group.select(sweep=sweep, engine="hf")
    if not hf:
        return None
    ours = {(r["attention"], r["kv_cache"], r[xkey]): r for r in group.select(sweep=sweep, engine="nanoserve")}
    headers = [sweep + " len", "attention", "cache", "HF total ms", "nanoserve total ms", "HF / nanoserve",
               "HF ms/token", "nanoserve ms/token", "HF peak MiB", "nanoserve peak MiB"]
    body = []
    for r in sorted(hf, key=lambda r: (r["attention"], r["kv_cache"], r[xkey])):
        o = ours.get((r["attention"], r["kv_cache"], r[xkey]))
        body.append([int(r[xkey]), "%s / %s" % (attention_label("hf", r["attention"]), r["attention"]), r["kv_cache"],
                     fmt(r["total_ms"]), fmt(o["total_ms"]) if o else "-",
                     ("%.2fx" % (r["total_ms"] / o["total_ms"])) if o else "-",
                     fmt(r["ms_per_output_token"], 2), fmt(o["ms_per_output_token"], 2) if o else "-",
                     fmt(r["peak_mem_bytes"] / MIB), fmt(o["peak_mem_bytes"] / MIB) if o else "-"])
    return table(headers, body, ["---:", "---", "---"] + ["---:"] * 7)


# ---------------------------------------------------------------- findings


class Findings:
    """Sentences computed from the data, each naming its plot and table, keyed
    by (kind, id); one per group (model) and attention where they apply."""

    def __init__(self):
        self.items = collections.defaultdict(list)

    def add(self, kind, key, text):
        self.items[(kind, key)].append(text)

    def get(self, kind, key):
        got = self.items.get((kind, key))
        if not got:
            return None
        return "".join("\n  - " + text for text in got)


def ref(group, png, anchor):
    return "([plot](results/%s/%s), [table](#%s))" % (group.kind, png, anchor)


def anchor_of(group, what):
    return slug(group.kind, group.name, group.dtype, what)


def by_x(rows, xkey):
    return {r[xkey]: r for r in rows}


def compute_findings(groups, figs):
    f = Findings()
    for g in groups:
        who = "%s %s" % (g.name, g.kind.upper())
        for att in sorted({r["attention"] for r in g.rows if r["engine"] == "nanoserve"}):
            tag = "%s, %s attention" % (who, att)
            # Part A/B, prompt sweep.
            for sweep, xkey in (("prompt", "prompt_len"), ("output", "output_len")):
                png = figs.get((g.kind, g.slug, sweep))
                if not png:
                    continue
                r = ref(g, png, anchor_of(g, sweep + "-" + att))
                off = by_x(g.select(sweep=sweep, engine="nanoserve", attention=att, kv_cache="off"), xkey)
                on = by_x(g.select(sweep=sweep, engine="nanoserve", attention=att, kv_cache="on"), xkey)
                if len(off) >= 2:
                    lo, hi = min(off), max(off)
                    a, b = off[lo], off[hi]
                    growth = b["total_ms"] / a["total_ms"]
                    ratio = hi / lo
                    exponent = math.log(growth) / math.log(ratio) if ratio > 1 and growth > 0 else float("nan")
                    key = "A_prompt" if sweep == "prompt" else "A_output"
                    f.add(g.kind, key,
                          "%s: with the cache off, growing the %s from %d to %d tokens (x%.0f) grows the total time "
                          "from %s to %s ms (x%.1f, about length^%.2f) and the time per output token from %s to %s ms %s."
                          % (tag, sweep, lo, hi, ratio, fmt(a["total_ms"]), fmt(b["total_ms"]), growth, exponent,
                             fmt(a["ms_per_output_token"], 2), fmt(b["ms_per_output_token"], 2), r))
                    f.add(g.kind, "A_memory",
                          "%s, %s sweep, cache off: peak %s %s MiB at %d tokens, %s MiB at %d (weights %s MiB) %s."
                          % (tag, sweep, "allocated" if g.kind == "gpu" else "RSS", fmt(a["peak_mem_bytes"] / MIB), lo,
                             fmt(b["peak_mem_bytes"] / MIB), hi, fmt(a["weights_bytes"] / MIB), r))
                if len(on) >= 2:
                    lo, hi = min(on), max(on)
                    a, b = on[lo], on[hi]
                    key = "B_prompt" if sweep == "prompt" else "B_output"
                    f.add(g.kind, key,
                          "%s: with the cache on, the same %s growth (%d to %d) takes the total from %s to %s ms (x%.1f), "
                          "time per output token %s to %s ms, decode step %s to %s ms %s."
                          % (tag, sweep, lo, hi, fmt(a["total_ms"]), fmt(b["total_ms"]), b["total_ms"] / a["total_ms"],
                             fmt(a["ms_per_output_token"], 2), fmt(b["ms_per_output_token"], 2),
                             fmt(a["decode_ms_per_step"], 2), fmt(b["decode_ms_per_step"], 2), r))
                common = sorted(set(off) & set(on))
                if common:
                    speed = [(x, off[x]["total_ms"] / on[x]["total_ms"]) for x in common]
                    pays = next((x for x, s in speed if s >= 1.2), None)
                    f.add(g.kind, "B_speedup",
                          "%s, %s sweep: cache on is %s faster than off (from the shortest to the longest); "
                          "it first pays 1.2x or more at %s %s."
                          % (tag, sweep, " / ".join("%.2fx@%d" % (s, x) for x, s in speed),
                             ("%d tokens" % pays) if pays is not None else "no measured length", r))
                    x = common[-1]
                    d = (on[x]["peak_mem_bytes"] - off[x]["peak_mem_bytes"]) / MIB
                    f.add(g.kind, "B_memory",
                          "%s, %s sweep at %d tokens: peak memory %s MiB with the cache on against %s MiB off (%+.1f MiB) %s."
                          % (tag, sweep, x, fmt(on[x]["peak_mem_bytes"] / MIB), fmt(off[x]["peak_mem_bytes"] / MIB), d, r))
            # Part C.
            png = figs.get((g.kind, g.slug, "prefix-" + att))
            rows = g.select(sweep="prefix", engine="nanoserve", attention=att)
            if png and rows:
                r = ref(g, png, anchor_of(g, "prefix-" + att))
                key = lambda x: (int(x["batch"]), int(x["shared_len"]))
                on = {key(x): x for x in rows if x["kv_cache"] == "on"}
                pre = {key(x): x for x in rows if x["kv_cache"] == "prefix"}
                for b in sorted({k[0] for k in pre}):
                    pts = sorted(s for (bb, s) in pre if bb == b and (bb, s) in on)
                    if not pts:
                        continue
                    sp = ["%.2fx@%d" % (on[(b, s)]["total_ms"] / pre[(b, s)]["total_ms"], s) for s in pts]
                    last = pre[(b, pts[-1])]
                    f.add(g.kind, "C_speedup",
                          "%s, batch %d: prefix reuse against cache on without reuse, by shared length: %s; at %d shared "
                          "tokens it computes %d of %d prompt tokens (reuses %d) %s."
                          % (tag, b, " / ".join(sp), pts[-1], last["prompt_tokens_computed"], last["prompt_tokens"],
                             last["prompt_tokens_reused"], r))
    # The peer.
    for g in groups:
        for sweep, xkey in (("prompt", "prompt_len"), ("output", "output_len")):
            hf = g.select(sweep=sweep, engine="hf")
            if not hf:
                continue
            ours = {(x["attention"], x["kv_cache"], x[xkey]): x for x in g.select(sweep=sweep, engine="nanoserve")}
            pairs = [(x, ours[(x["attention"], x["kv_cache"], x[xkey])]) for x in hf
                     if (x["attention"], x["kv_cache"], x[xkey]) in ours]
            if not pairs:
                continue
            ratios = sorted(h["total_ms"] / o["total_ms"] for h, o in pairs)
            png = figs.get((g.kind, g.slug, sweep))
            f.add(g.kind, "peer",
                  "%s %s, %s sweep: HF generate takes %.2fx to %.2fx (median %.2fx) of nanoserve's time at the same "
                  "points, mode and attention %s."
                  % (g.name, g.kind.upper(), sweep, ratios[0], ratios[-1], ratios[len(ratios) // 2],
                     ref(g, png, anchor_of(g, "peer-" + sweep))))
    return f


# ---------------------------------------------------------------- report


PENDING = {"gpu": "_GPU: not measured yet in this copy of the report: run `scripts/gpu/bench.sh` on the GPU "
                  "machine, copy `$OUT/results/gpu/*.csv` into `docs/results/gpu/`, then `bench/report.sh`._",
           "cpu": "_CPU: no CPU results in docs/results/cpu/: run `bench/report.sh --cpu`._"}


def machine_section(kind, groups, figs, results_dir):
    gs = [g for g in groups if g.kind == kind]
    if not gs:
        return PENDING[kind] + "\n"
    out = []
    info = os.path.join(results_dir, kind, "machine.txt")
    if os.path.exists(info):
        with open(info) as f:
            out.append("The machine during the run (`results/%s/machine.txt`):\n\n```\n%s```\n" % (kind, f.read()))
    for g in gs:
        out.append("### %s\n" % g.title())
        csvs = sorted({r["csv"] for r in g.rows})
        out.append("Data: %s. Every number is the median of `repeats` timed runs after a warm-up.\n"
                   % ", ".join("[`%s`](results/%s)" % (c, c) for c in csvs))
        for sweep in ("prompt", "output"):
            png = figs.get((kind, g.slug, sweep))
            if not png:
                continue
            out.append("![%s sweep](results/%s/%s)\n" % (sweep, kind, png))
            for att in sorted({r["attention"] for r in g.select(sweep=sweep)}):
                for engine in ("nanoserve", "hf"):
                    t = sweep_table(g, sweep, engine, att)
                    if t:
                        name = "%s-%s" % (sweep, att) if engine == "nanoserve" else "%s-%s-hf" % (sweep, att)
                        out.append('<a id="%s"></a>\n\n**%s sweep, %s, attention %s**\n\n%s\n'
                                   % (anchor_of(g, name), sweep, "nanoserve" if engine == "nanoserve" else "HF peer",
                                      attention_label(engine, att), t))
            t = peer_table(g, sweep)
            if t:
                out.append('<a id="%s"></a>\n\n**%s sweep: HF peer beside nanoserve**\n\n%s\n'
                           % (anchor_of(g, "peer-" + sweep), sweep, t))
        for att in sorted({r["attention"] for r in g.select(sweep="prefix")}):
            png = figs.get((kind, g.slug, "prefix-" + att))
            if png:
                out.append("![prefix sweep](results/%s/%s)\n" % (kind, png))
            t = prefix_table(g, att)
            out.append('<a id="%s"></a>\n\n**Part C, attention %s**\n\n%s\n' % (anchor_of(g, "prefix-" + att), att, t))
    return "\n".join(out)


def fill_template(template, groups, figs, findings, results_dir):
    def machine_line(kind):
        cards = sorted({c for g in groups if g.kind == kind for c in g.cards})
        return ", ".join(cards) if cards else "(not measured yet)"

    def sub(m):
        field = m.group(1)
        if field.startswith("section:"):
            return machine_section(field.split(":", 1)[1], groups, figs, results_dir)
        if field.startswith("machine:"):
            return machine_line(field.split(":", 1)[1])
        kind, key = field.split(":", 1)
        got = findings.get(kind, key)
        if got:
            return got
        if not any(g.kind == kind for g in groups):
            return "_(%s: pending, see the %s section)_" % (kind.upper(), kind.upper())
        return "_(%s: no data for this in the %s run)_" % (kind.upper(), kind.upper())

    return re.sub(r"\{\{([a-z]+:[A-Za-z_:]+)\}\}", sub, template)


def summary(rows):
    headers = ["kind", "engine", "model", "attn", "sweep", "cache", "B", "P", "S", "O", "total ms", "ms/tok", "peak MiB"]
    body = [[r["kind"], r["engine"], model_name(r["model"]), attention_label(r["engine"], r["attention"]), r["sweep"],
             r["kv_cache"], int(r["batch"]), int(r["prompt_len"]), int(r["shared_len"]), int(r["output_len"]),
             fmt(r["total_ms"]), fmt(r["ms_per_output_token"], 2), fmt(r["peak_mem_bytes"] / MIB)] for r in rows]
    return table(headers, body, ["---"] * 6 + ["---:"] * 7)


def brief(groups):
    """One line per machine, model, engine and attention: the largest point of each sweep."""
    headers = ["kind", "card", "model", "engine", "attn", "prompt sweep: off / on ms at max P",
               "output sweep: off / on ms/token at max O", "Part C: on / prefix ms at max S, max B", "max peak MiB"]
    body = []
    for g in groups:
        for engine in ("nanoserve", "hf"):
            for att in sorted({r["attention"] for r in g.select(engine=engine)}):
                rows = g.select(engine=engine, attention=att)
                cells = []
                for sweep, xkey, measure, d in (("prompt", "prompt_len", "total_ms", 1),
                                                ("output", "output_len", "ms_per_output_token", 2)):
                    rs = [r for r in rows if r["sweep"] == sweep]
                    if not rs:
                        cells.append("-")
                        continue
                    x = max(r[xkey] for r in rs)
                    by = {r["kv_cache"]: r for r in rs if r[xkey] == x}
                    a, b = by.get("off"), by.get("on")
                    cells.append("%d: %s / %s%s" % (x, fmt(a[measure], d) if a else "-", fmt(b[measure], d) if b else "-",
                                                    (" (%.1fx)" % (a[measure] / b[measure])) if a and b else ""))
                rs = [r for r in rows if r["sweep"] == "prefix"]
                if rs:
                    bmax = max(r["batch"] for r in rs)
                    smax = max(r["shared_len"] for r in rs if r["batch"] == bmax)
                    by = {r["kv_cache"]: r for r in rs if r["batch"] == bmax and r["shared_len"] == smax}
                    a, b = by.get("on"), by.get("prefix")
                    cells.append("B=%d S=%d: %s / %s%s" % (bmax, smax, fmt(a["total_ms"]) if a else "-",
                                                          fmt(b["total_ms"]) if b else "-",
                                                          (" (%.1fx)" % (a["total_ms"] / b["total_ms"])) if a and b else ""))
                else:
                    cells.append("-")
                cells.append(fmt(max(r["peak_mem_bytes"] for r in rows) / MIB))
                body.append([g.kind, " / ".join(g.cards), g.name, engine, attention_label(engine, att)] + cells)
    return table(headers, body, ["---"] * 5 + ["---:"] * 4)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="folder with <kind>/*.csv (kind: cpu, gpu)")
    parser.add_argument("--report", help="write the report here (from --template)")
    parser.add_argument("--template", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_template.md"))
    parser.add_argument("--summary", action="store_true", help="print a short markdown table of every row")
    parser.add_argument("--brief", action="store_true", help="print one line per model, engine and attention")
    parser.add_argument("--no-plots", action="store_true", help="name the figures but do not draw them")
    args = parser.parse_args()

    rows = load_rows(args.results)
    if not rows:
        raise SystemExit("report: no CSV rows under %s/<kind>/" % args.results)
    groups = groups_of(rows)
    global DRAW
    DRAW = not args.no_plots and GNUPLOT is not None
    if not args.no_plots and GNUPLOT is None:
        print("report: no gnuplot here: figures are named but not drawn (bench/report.sh on a machine "
              "with gnuplot draws them)", file=sys.stderr)
    figs = {}
    for g in groups:
        out_dir = os.path.join(args.results, g.kind)
        for sweep in ("prompt", "output"):
            png = sweep_figure(g, sweep, out_dir)
            if png:
                figs[(g.kind, g.slug, sweep)] = png
        for png in prefix_figures(g, out_dir):
            figs[(g.kind, g.slug, "prefix-" + png.rsplit("_", 1)[1][:-4])] = png
    for kind in sorted({g.kind for g in groups}):
        with open(os.path.join(args.results, kind, "tables.md"), "w") as f:
            f.write("# Every measured point (%s)\n\nGenerated by bench/report.py from the CSVs in this folder.\n\n" % kind)
            f.write(full_table([r for r in rows if r["kind"] == kind]) + "\n")
    if args.report:
        with open(args.template) as f:
            template = f.read()
        findings = compute_findings(groups, figs)
        with open(args.report, "w") as f:
            f.write(fill_template(template, groups, figs, findings, args.results))
        print("report: wrote %s (%d rows, %d figures)" % (args.report, len(rows), len(figs)), file=sys.stderr)
    if args.summary:
        print(summary(rows))
    if args.brief:
        print(brief(groups))


if __name__ == "__main__":
    main()
