#!/usr/bin/env python3
"""The tables of bench/compare: trellis_bench's Google Benchmark JSON against
bench/reference_bench.py's JSON, over one or more interleaved rounds (ours, the
reference, ours, the reference, ...). Each round gives a ratio per row, from that
round's medians; a table shows the median of the rounds' times and of their ratios,
with the ratios' spread (lowest to highest), so that drift between rounds shows.

    bench/compare_table.py THREADS OURS_1.json REFERENCE_1.json [OURS_2.json REFERENCE_2.json ...]
"""
import json
import math
import statistics
import sys

TOKENS = {"tiny": 4 * 32, "seqmnist": 64 * 784, "charptb-cpu": 24 * 140}
PRECISIONS = ("bf16", "tf32", "fp32")


def medians(ours):
    """(kind, config) -> (seconds, GEMM seconds, tensor peak MiB, recompute k, GEMM share of the peak).
    A precision other than the default goes into the kind: "train_step/bf16"."""
    med = {}
    for b in ours["benchmarks"]:
        if b.get("aggregate_name") == "median" or ("aggregate_name" not in b and b.get("run_type") == "iteration"):
            # run_name: kind/config[/precision][/iterations:N][/repeats:N]/manual_time
            kind, config, *rest = b["run_name"].split("/")
            mode = [part for part in rest if part in PRECISIONS]
            if mode:  # reduced-precision rows: their own table
                kind += "/" + mode[0]
            med[(kind, config)] = (b["real_time"] / 1e3, b.get("gemm_ms", 0) / 1e3, b.get("tensor_peak_MiB", 0),
                                   b.get("recompute_k", 1), b.get("gemm_peak_share", float("nan")))
    return med


def merge(benchmark_jsons):
    """One medians() per round -> (kind, config) -> list over the rounds that have it."""
    merged = {}
    for ours in benchmark_jsons:
        for key, value in medians(ours).items():
            merged.setdefault(key, []).append(value)
    return merged


def reference_times(refs):
    """(config, "forward_s" or "train_step_s") -> list over the rounds."""
    out = {}
    for ref in refs:
        for row in ref["rows"]:
            for key in ("forward_s", "train_step_s"):
                out.setdefault((row["config"], key), []).append(row[key])
    return out


def med(values):
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def spread(ratios):
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def tables_rounds(rounds, threads):
    """rounds: [(ours_json, reference_json), ...], interleaved in that order."""
    ours_all, refs = [o for o, _ in rounds], [r for _, r in rounds]
    ours0, ref0 = rounds[0]
    data = merge(ours_all)
    ref_t = reference_times(refs)
    configs = []
    for ref in refs:
        configs += [row["config"] for row in ref["rows"] if row["config"] not in configs]
    n_rounds = max((len(v) for v in data.values()), default=0)
    lines = []
    out = lines.append
    ctx = ours0["context"]
    out(f"trellis ({ctx.get('execution_space')}, {threads} threads, Kokkos {ctx.get('kokkos_version')}) against "
        f"{ref0['implementation']}, PyTorch {ref0['torch']}, {threads} threads; same machine, {n_rounds} "
        f"round(s) interleaved (ours, the reference, ...); times: median over the rounds of each round's median; "
        f"ref / ours: median of the rounds' ratios, and their spread")
    if ctx.get("fp32_fma_peak"):
        out(f"FP32 FMA peak: {ctx['fp32_fma_peak']}; GEMM % peak: the step's bare GEMMs' FLOP rate against it")
    out(f"{'config':<12}{'step':<11}{'trellis s':>11}{'reference s':>13}{'ref / ours':>11}{'spread':>12}"
        f"{'trellis tok/s':>15}{'ref tok/s':>11}{'ours / GEMM':>13}{'GEMM % peak':>13}")
    for c in configs:
        for kind, key in (("forward", "forward_s"), ("train_step", "train_step_s")):
            ours_rounds = data.get((kind, c), [])
            theirs = ref_t.get((c, key), [])
            n_pairs = min(len(ours_rounds), len(theirs))
            if n_pairs == 0:
                continue
            ratios = [theirs[i] / ours_rounds[i][0] for i in range(n_pairs)]
            t = med([v[0] for v in ours_rounds])
            r = med(theirs)
            ratio_to_gemm = med([v[0] / v[1] if v[1] else float("nan") for v in ours_rounds])
            share = med([v[4] for v in ours_rounds])
            n = TOKENS[c]
            out(f"{c:<12}{kind:<11}{t:>11.4f}{r:>13.4f}{statistics.median(ratios):>11.2f}{spread(ratios):>12}"
                f"{n / t:>15.0f}{n / r:>11.0f}{ratio_to_gemm:>13.2f}{100 * share:>12.1f}%")
    out("")
    out("level recomputation (trellis only): train step with every level kept against k about sqrt(levels);")
    out("tensor peak = high-water mark of the Kokkos allocations in the step (parameters, input, cache)")
    out(f"{'config':<12}{'k':>4}{'full s':>10}{'recompute s':>13}{'time ratio':>12}{'full MiB':>11}"
        f"{'recompute MiB':>15}")
    for c in configs:
        if ("train_step", c) in data and ("train_step_recompute", c) in data:
            full, rec = data[("train_step", c)], data[("train_step_recompute", c)]
            ft, rt = med([v[0] for v in full]), med([v[0] for v in rec])
            out(f"{c:<12}{rec[0][3]:>4.0f}{ft:>10.4f}{rt:>13.4f}{rt / ft:>12.2f}{full[0][2]:>11.1f}"
                f"{rec[0][2]:>15.1f}")
    if any(("train_step/bf16", c) in data for c in configs):
        out("")
        out("bf16 products, fp32 sums (MathMode::bf16, trellis --bf16) against the fp32 rows above, in the same "
            "runs; the reference is fp32")
        out(f"{'config':<12}{'step':<11}{'fp32 s':>10}{'bf16 s':>10}{'fp32 / bf16':>13}{'spread':>12}"
            f"{'ref / bf16':>12}{'bf16 / GEMM':>13}")
        for c in configs:
            for kind, key in (("forward", "forward_s"), ("train_step", "train_step_s")):
                if (kind, c) in data and (kind + "/bf16", c) in data:
                    full, red = data[(kind, c)], data[(kind + "/bf16", c)]
                    n_pairs = min(len(full), len(red))
                    ratios = [full[i][0] / red[i][0] for i in range(n_pairs)]
                    ft, bt = med([v[0] for v in full]), med([v[0] for v in red])
                    r = med(ref_t.get((c, key), [float("nan")]))
                    bg = med([v[0] / v[1] if v[1] else float("nan") for v in red])
                    out(f"{c:<12}{kind:<11}{ft:>10.4f}{bt:>10.4f}{statistics.median(ratios):>13.2f}"
                        f"{spread(ratios):>12}{r / bt:>12.2f}{bg:>13.2f}")
    return "\n".join(lines)


def tables(ours, ref, threads):
    """One round."""
    return tables_rounds([(ours, ref)], threads)


if __name__ == "__main__":
    if len(sys.argv) < 4 or len(sys.argv) % 2 != 0:
        sys.exit("usage: bench/compare_table.py THREADS OURS_1.json REFERENCE_1.json [OURS_2.json REFERENCE_2.json ...]")

    def load(path):
        with open(path) as f:
            return json.load(f)

    pairs = [(load(sys.argv[i]), load(sys.argv[i + 1])) for i in range(2, len(sys.argv), 2)]
    print(tables_rounds(pairs, sys.argv[1]))
