#!/usr/bin/env python3
"""Draws `nanoserve load`'s throughput-vs-latency curve from its sweep CSV
(one line per request rate, bench/load_stats.h SweepCsvHeader):

    bench/load_plot.py --csv load_sweep.csv --png load.png [--title TEXT]
    bench/load_plot.py --csv bytes=bytes.csv --csv cuda_ipc=ipc.csv --png load.png

Two panels against output token throughput: time to first token and time
per output token, p50 and p99, each point labelled with its request rate.
Several `--csv NAME=PATH` draw several runs (say, the services over bytes and
over CUDA IPC) on the same panels, a colour each. `nanoserve load --plot PNG`
runs it. The gnuplot helpers are bench/report.py's.
"""

import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (datablock, run_gnuplot)


def read_sweep(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit("load_plot: %s has no rows" % path)
    return rows


def script(runs, png, title):
    """runs: [(name, rows)], each rows a sweep CSV's lines."""
    def num(r, key):
        return float(r[key])

    lines = ["set terminal pngcairo noenhanced size 1000,420 font 'Sans,9'",
             "set output '%s'" % png]
    for i, (_, rows) in enumerate(runs):
        points = [[num(r, "output_throughput"), num(r, "ttft_p50_ms"), num(r, "ttft_p99_ms"),
                   num(r, "tpot_p50_ms"), num(r, "tpot_p99_ms")] for r in rows]
        lines.append(report.datablock("load%d" % i, points))
    lines += ["set multiplot layout 1,2 title '%s'" % title.replace("'", ""),
              "set grid", "set key top left opaque box",
              "set xlabel 'output token throughput (tokens/s)'", "set offsets graph 0.05, graph 0.1, graph 0.1, 0"]
    for col, (name, p50, p99) in enumerate([("time to first token (ms)", 2, 3),
                                            ("time per output token (ms)", 4, 5)]):
        lines.append("unset label")
        for _, rows in runs:
            for r in rows:
                lines.append("set label '%s req/s' at %.6g,%.6g offset 0.5,0.7 font ',8'"
                             % (r["rate"], num(r, "output_throughput"),
                                num(r, "ttft_p50_ms" if col == 0 else "tpot_p50_ms")))
        curves = []
        for i, (run, _) in enumerate(runs):
            prefix = "%s " % run if run else ""
            curves += ["$load%d using 1:%d with linespoints lw 2 pt 7 lc %d title '%sp50'"
                       % (i, p50, i + 1, prefix),
                       "$load%d using 1:%d with linespoints lw 2 dt 2 pt 5 lc %d title '%sp99'"
                       % (i, p99, i + 1, prefix)]
        lines += ["set ylabel '%s'" % name, "plot " + ", \\\n  ".join(curves)]
    lines.append("unset multiplot")
    return "\n".join(lines)


def parse_runs(specs):
    """--csv PATH (one unnamed run) or --csv NAME=PATH, repeated."""
    runs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        elif not name or not path:
            raise SystemExit("load_plot: --csv %r is not NAME=PATH" % spec)
        runs.append((name, read_sweep(path)))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, action="append",
                        help="nanoserve load's sweep CSV, or NAME=CSV; repeat to draw several runs")
    parser.add_argument("--png", required=True, help="the plot to write")
    parser.add_argument("--title", default="nanoserve load: latency against throughput, one point per request rate")
    args = parser.parse_args()
    if not report.GNUPLOT:
        raise SystemExit("load_plot: gnuplot is missing (scripts/setup.sh installs it)")
    report.run_gnuplot(script(parse_runs(args.csv), args.png, args.title), args.png)


if __name__ == "__main__":
    main()
