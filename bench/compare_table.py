#!/usr/bin/env python3
"""The tables of bench/compare: trellis_bench's Google Benchmark JSON against
bench/reference_bench.py's JSON, from medians.

    bench/compare_table.py OURS.json REFERENCE.json THREADS
"""
import json
import sys

TOKENS = {"tiny": 4 * 32, "seqmnist": 64 * 784, "charptb-cpu": 24 * 140}
PRECISIONS = ("bf16", "tf32", "fp32")


def medians(ours):
    """(kind, config) -> (seconds, GEMM seconds, tensor peak MiB, recompute k).
    A precision other than the default goes into the kind: "train_step/bf16"."""
    med = {}
    for b in ours["benchmarks"]:
        if b.get("aggregate_name") == "median" or ("aggregate_name" not in b and b.get("run_type") == "iteration"):
            # run_name: kind/config[/precision][/iterations:N][/repeats:N]/manual_time
            kind, config, *rest = b["run_name"].split("/")
            mode = [part for part in rest if part in PRECISIONS]
            if mode:  # reduced-precision rows (bf16 on AMX): their own table
                kind += "/" + mode[0]
            med[(kind, config)] = (b["real_time"] / 1e3, b.get("gemm_ms", 0) / 1e3, b.get("tensor_peak_MiB", 0),
                                   b.get("recompute_k", 1))
    return med


def tables(ours, ref, threads):
    med = medians(ours)
    lines = []
    out = lines.append
    out(f"trellis ({ours['context'].get('execution_space')}, {threads} threads, Kokkos "
        f"{ours['context'].get('kokkos_version')}) against {ref['implementation']}, PyTorch {ref['torch']}, "
        f"{threads} threads; medians; same machine, one run")
    out(f"{'config':<12}{'step':<11}{'trellis s':>11}{'reference s':>13}{'ref / ours':>11}{'trellis tok/s':>15}"
        f"{'ref tok/s':>11}{'ours / GEMM':>13}")
    for row in ref["rows"]:
        c = row["config"]
        for kind, key in (("forward", "forward_s"), ("train_step", "train_step_s")):
            if (kind, c) not in med:
                continue
            t, gemm = med[(kind, c)][:2]
            r = row[key]
            n = TOKENS[c]
            out(f"{c:<12}{kind:<11}{t:>11.4f}{r:>13.4f}{r / t:>11.2f}{n / t:>15.0f}{n / r:>11.0f}"
                f"{(t / gemm if gemm else float('nan')):>13.2f}")
    out("")
    out("level recomputation (trellis only): train step with every level kept against k about sqrt(levels);")
    out("tensor peak = high-water mark of the Kokkos allocations in the step (parameters, input, cache)")
    out(f"{'config':<12}{'k':>4}{'full s':>10}{'recompute s':>13}{'time ratio':>12}{'full MiB':>11}"
        f"{'recompute MiB':>15}")
    for row in ref["rows"]:
        c = row["config"]
        if ("train_step", c) in med and ("train_step_recompute", c) in med:
            full, rec = med[("train_step", c)], med[("train_step_recompute", c)]
            out(f"{c:<12}{rec[3]:>4.0f}{full[0]:>10.4f}{rec[0]:>13.4f}{rec[0] / full[0]:>12.2f}{full[2]:>11.1f}"
                f"{rec[2]:>15.1f}")
    if any(("train_step/bf16", row["config"]) in med for row in ref["rows"]):
        out("")
        out("bf16 products on AMX tiles (MathMode::bf16, trellis --bf16) against the fp32 rows above; "
            "the reference is fp32")
        out(f"{'config':<12}{'step':<11}{'fp32 s':>10}{'bf16 s':>10}{'fp32 / bf16':>13}{'ref / bf16':>12}"
            f"{'bf16 / GEMM':>13}")
        for row in ref["rows"]:
            c = row["config"]
            for kind, key in (("forward", "forward_s"), ("train_step", "train_step_s")):
                if (kind, c) in med and (kind + "/bf16", c) in med:
                    full, red = med[(kind, c)], med[(kind + "/bf16", c)]
                    out(f"{c:<12}{kind:<11}{full[0]:>10.4f}{red[0]:>10.4f}{full[0] / red[0]:>13.2f}"
                        f"{row[key] / red[0]:>12.2f}{(red[0] / red[1] if red[1] else float('nan')):>13.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: bench/compare_table.py OURS.json REFERENCE.json THREADS")
    with open(sys.argv[1]) as f:
        ours_json = json.load(f)
    with open(sys.argv[2]) as f:
        ref_json = json.load(f)
    print(tables(ours_json, ref_json, sys.argv[3]))
