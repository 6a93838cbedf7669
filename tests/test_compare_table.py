#!/usr/bin/env python3
"""bench/compare's tables from benchmark names as Google Benchmark writes them: the
repetition and iteration parts of a name must not be taken for a precision (they once
were, and every row went missing from the table)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import compare_table  # noqa: E402


def row(run_name, aggregate, seconds, gemm_s, mib=100.0, k=1):
    return {"run_name": run_name, "name": run_name + "_" + aggregate, "run_type": "aggregate",
            "aggregate_name": aggregate, "real_time": seconds * 1e3, "gemm_ms": gemm_s * 1e3,
            "tensor_peak_MiB": mib, "recompute_k": k}


benchmarks = []
for aggregate, scale in (("mean", 9.0), ("median", 1.0), ("stddev", 0.1)):
    benchmarks += [
        row("forward/tiny/repeats:5/manual_time", aggregate, 0.001 * scale, 0.0005),
        row("train_step/tiny/repeats:5/manual_time", aggregate, 0.002 * scale, 0.001),
        row("forward/seqmnist/iterations:1/repeats:3/manual_time", aggregate, 1.5 * scale, 1.0),
        row("train_step/seqmnist/iterations:1/repeats:3/manual_time", aggregate, 4.0 * scale, 3.2, 1600.0),
        row("train_step_recompute/seqmnist/iterations:1/repeats:3/manual_time", aggregate, 4.8 * scale, 3.0,
            800.0, 3),
        row("forward/seqmnist/bf16/iterations:1/repeats:3/manual_time", aggregate, 0.75 * scale, 0.5),
        row("train_step/seqmnist/bf16/iterations:1/repeats:3/manual_time", aggregate, 2.0 * scale, 1.25),
    ]
ours = {"context": {"execution_space": "OpenMP", "kokkos_version": 40601}, "benchmarks": benchmarks}
ref = {"implementation": "the fixture", "torch": "1.13", "threads": 2,
       "rows": [{"config": "tiny", "forward_s": 0.004, "train_step_s": 0.01},
                {"config": "seqmnist", "forward_s": 3.0, "train_step_s": 12.0}]}
text = compare_table.tables(ours, ref, 2)
print(text)
lines = [" ".join(line.split()) for line in text.splitlines()]
expected = [
    "tiny forward 0.0010 0.0040 4.00 4.00-4.00 128000 32000 2.00 nan%",
    "tiny train_step 0.0020 0.0100 5.00 5.00-5.00 64000 12800 2.00 nan%",
    "seqmnist forward 1.5000 3.0000 2.00 2.00-2.00 33451 16725 1.50 nan%",
    "seqmnist train_step 4.0000 12.0000 3.00 3.00-3.00 12544 4181 1.25 nan%",
    "seqmnist 3 4.0000 4.8000 1.20 1600.0 800.0",
    "seqmnist forward 1.5000 0.7500 2.00 2.00-2.00 4.00 1.50",
    "seqmnist train_step 4.0000 2.0000 2.00 2.00-2.00 6.00 1.60",
]
missing = [e for e in expected if e not in lines]
if missing:
    sys.exit("test_compare_table: missing rows:\n  " + "\n  ".join(missing))

# Three interleaved rounds: the ratio is the median of the rounds' own ratios (not the
# ratio of the median times), and the spread their range; the GEMM share is shown.
def one_config_round(ours_s, ref_s, share):
    b = [row("train_step/seqmnist/iterations:1/repeats:3/manual_time", "median", ours_s, ours_s / 1.25)]
    b[0]["gemm_peak_share"] = share
    return ({"context": {"execution_space": "OpenMP", "kokkos_version": 40601,
                         "fp32_fma_peak": "2 threads x 1 GHz"}, "benchmarks": b},
            {"implementation": "the fixture", "torch": "1.13", "threads": 2,
             "rows": [{"config": "seqmnist", "forward_s": 1.0, "train_step_s": ref_s}]})


rounds = [one_config_round(4.0, 20.0, 0.5), one_config_round(2.0, 14.0, 0.6), one_config_round(5.0, 30.0, 0.7)]
text = compare_table.tables_rounds(rounds, 2)
print(text)
lines = [" ".join(line.split()) for line in text.splitlines()]
# Ratios 5, 7 and 6: median 6, where the median times (4 and 20) would give 5.
want = "seqmnist train_step 4.0000 20.0000 6.00 5.00-7.00 12544 2509 1.25 60.0%"
if want not in lines:
    sys.exit("test_compare_table: three rounds: missing\n  " + want)
if not any(line.startswith("FP32 FMA peak: 2 threads x 1 GHz") for line in lines):
    sys.exit("test_compare_table: the FMA peak line is missing")
print("test_compare_table: all", len(expected) + 2, "rows present")
