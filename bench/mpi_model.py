#!/usr/bin/env python3
"""Weak-scaling model of data-parallel TrellisNet training.

Reads the JSON of `mpirun -np P trellis_mpi_bench --benchmark_out=FILE` (P >= 2) and
  1. fits the group sum's time on this machine to t = a + b * bytes (the latency-
     bandwidth model; for a ring allreduce of P ranks a = 2 (P - 1) alpha and
     b = 2 (P - 1) / (P * bandwidth));
  2. takes the measured train step of charptb-cpu as this machine's speed (FLOPs per
     second of the level GEMMs), and from it the compute per step of the paper's
     configurations (charptb, wordptb, seqmnist) on a node like this one;
  3. predicts, for a stated network (a ring allreduce over links of --gbit Gb/s with
     --latency-us of latency), the weak-scaling efficiency compute / (compute +
     exposed communication) at 2, 8, 64 and 512 nodes, with and without overlapping
     the sums with backward.

What overlaps: the reducer starts a bucket's sum when backward has finished every
gradient in it. A TrellisNet's core weights are shared by every level, so their
gradient is final only when the last level's backward is done, and a tied embedding
only after the core: only the heads (the decoder bias, a mixture of softmaxes, a
classifier's linear layer) finish early. The model therefore hides the heads' sum
behind the core's backward and leaves the rest exposed.

  bench/mpi_model.py RESULT.json... [--gbit 100] [--latency-us 2] [--step-seconds NAME=S ...]
--step-seconds replaces the compute per step of a configuration (for example a GPU
node's figure).
"""
import argparse
import json
import sys

# The paper's configurations (the reference code's): batch, length, p, q, levels,
# vocabulary (0: a classifier with `classes`), and whether the embedding is tied.
CONFIGS = {
    "charptb": dict(N=24, L=140, p=200, q=1250, levels=140, ntoken=50),
    "wordptb": dict(N=16, L=110, p=400, q=1400, levels=58, ntoken=10000),
    "seqmnist": dict(N=64, L=784, p=1, q=130, levels=11, ntoken=0, classes=10, nout=10),
}
MEASURED = dict(N=24, L=140, p=200, q=1250, levels=4, ntoken=50)  # charptb-cpu, as trellis_mpi_bench trains it
NODES = [2, 8, 64, 512]


def parameters(c):
    """(core, early heads, late embedding) parameter counts."""
    q, p = c["q"], c["p"]
    core = 4 * q * p * 2 + 4 * q * q * 2 + 4 * q + 2 * 4 * q  # weight1, weight2, bias2, weight-norm gains
    if c["ntoken"] == 0:
        return core, c["nout"] * c["classes"] + c["classes"], 0
    return core, c["ntoken"], c["ntoken"] * p  # decoder bias early; the tied embedding last


def train_flops(c):
    """Level GEMMs of a train step: forward, and backward's two (weights and history)."""
    R, q, p = c["N"] * c["L"], c["q"], c["p"]
    per_level = 3 * 2 * R * (2 * q + 2 * p) * 4 * q
    return per_level * c["levels"]


def load(paths):
    sums, steps, context = [], {}, {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        context = data.get("context", context)
        read(data, sums, steps)
    return context, sums, steps


def read(data, sums, steps):
    for b in data["benchmarks"]:
        name = b.get("run_name", b["name"])
        if b.get("aggregate_name") not in (None, "median"):
            continue
        seconds = b["real_time"] / {"ms": 1e3, "us": 1e6, "ns": 1e9, "s": 1}[b["time_unit"]]
        if name.startswith("sum/iallreduce/"):
            sums.append((float(b["bytes"]), seconds, int(b["ranks"])))
        elif name.startswith("train_step/"):
            steps[name.split("/")[1]] = dict(seconds=seconds, **{k: b[k] for k in
                                                                  ("compute_seconds", "gradient_sum_seconds",
                                                                   "gradient_MiB", "ranks", "threads_per_rank",
                                                                   "tokens_per_second")})


def fit(sums):
    """Least squares of t = a + b * bytes, each point weighted by 1 / t (relative error)."""
    sw = swx = swy = swxx = swxy = 0.0
    for x, y, _ in sums:
        w = 1.0 / (y * y)
        sw += w
        swx += w * x
        swy += w * y
        swxx += w * x * x
        swxy += w * x * y
    b = (sw * swxy - swx * swy) / (sw * swxx - swx * swx)
    a = (swy - b * swx) / sw
    return a, b


def ring_seconds(nbytes, nodes, gbit, latency_us):
    if nodes == 1:
        return 0.0
    return 2 * (nodes - 1) * latency_us * 1e-6 + 2 * (nodes - 1) / nodes * nbytes / (gbit * 1e9 / 8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("result", nargs="+")
    ap.add_argument("--gbit", type=float, default=100.0)
    ap.add_argument("--latency-us", type=float, default=2.0)
    ap.add_argument("--step-seconds", action="append", default=[], metavar="NAME=S")
    args = ap.parse_args()
    context, sums, steps = load(args.result)
    ranks = sums[0][2] if sums else 0
    if not sums:
        sys.exit(f"{' '.join(args.result)}: no sum/iallreduce rows (run trellis_mpi_bench with at least 2 ranks)")
    if "charptb-cpu" not in steps:
        sys.exit(f"{' '.join(args.result)}: no train_step/charptb-cpu row")

    ranks = sums[0][2]
    # Messages that stay in the caches follow a line; past the last-level cache the
    # bandwidth falls, so the largest message's own rate is given beside the fit.
    small = [s for s in sums if s[0] <= 4 << 20]
    a, b = fit(small)
    print(f"## The group sum on this machine ({context.get('communicator', 'MPI')})\n")
    print("| bytes | measured ms | fit (up to 4 MiB) ms | GB/s |")
    print("|---:|---:|---:|---:|")
    for x, y, _ in sorted(sums):
        print(f"| {int(x)} | {y * 1e3:.3f} | {(a + b * x) * 1e3:.3f} | {x / y / 1e9:.2f} |")
    alpha = a / (2 * (ranks - 1))
    bandwidth = 2 * (ranks - 1) / ranks / b
    x, y, _ = max(sums)
    print(f"\nfit up to 4 MiB: t = {a * 1e6:.1f} us + bytes / {1 / b / 1e9:.2f} GB/s; as a ring of {ranks}: latency "
          f"{alpha * 1e6:.1f} us, bandwidth {bandwidth / 1e9:.2f} GB/s. At {int(x) >> 20} MiB: {x / y / 1e9:.2f} GB/s.\n")

    print("## Train steps measured here\n")
    print("| model | ranks x threads | step ms | compute alone ms | one sum of the gradient ms | gradient MiB | tokens/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, s in steps.items():
        print(f"| {name} | {int(s['ranks'])} x {int(s['threads_per_rank'])} | {s['seconds'] * 1e3:.1f} | "
              f"{s['compute_seconds'] * 1e3:.1f} | {s['gradient_sum_seconds'] * 1e3:.2f} | {s['gradient_MiB']:.2f} | "
              f"{s['tokens_per_second']:.0f} |")

    # This node's speed: charptb-cpu's step at its per-rank batch is mostly level GEMMs.
    m = steps["charptb-cpu"]
    measured = dict(MEASURED, N=MEASURED["N"] // int(m["ranks"]))
    flop_rate = train_flops(measured) / m["compute_seconds"]
    override = dict(kv.split("=", 1) for kv in args.step_seconds)
    print(f"\n## Weak scaling: ring allreduce over {args.gbit:g} Gb/s links, {args.latency_us:g} us latency\n")
    given = ", ".join(f"{k} {v} s" for k, v in override.items())
    measured_note = (f"from this machine's measured charptb-cpu step ({flop_rate / 1e9:.0f} GFLOP/s of level GEMMs "
                     "per node)")
    if not override:
        print(f"Compute per step (each node trains the paper's batch): {measured_note}.\n")
    elif set(override) >= set(CONFIGS):
        print(f"Compute per step (each node trains the paper's batch): as given ({given}).\n")
    else:
        print(f"Compute per step (each node trains the paper's batch): as given ({given}); the others "
              f"{measured_note}.\n")
    print("| model | gradient MB | compute per step s | overlap | " + " | ".join(f"{n} nodes" for n in NODES) + " |")
    print("|---|---:|---:|---|" + "---:|" * len(NODES))
    for name, c in CONFIGS.items():
        core, early, late = parameters(c)
        total_bytes = 4 * (core + early + late)
        compute = float(override[name]) if name in override else train_flops(c) / flop_rate
        # Backward's core part: about two thirds of the step (two GEMMs of three per level).
        core_backward = compute * 2 / 3
        for overlap in (False, True):
            cells = []
            for n in NODES:
                if overlap:
                    exposed = ring_seconds(4 * (core + late), n, args.gbit, args.latency_us) + max(
                        0.0, ring_seconds(4 * early, n, args.gbit, args.latency_us) - core_backward)
                else:
                    exposed = ring_seconds(total_bytes, n, args.gbit, args.latency_us)
                cells.append(f"{100 * compute / (compute + exposed):.1f}%")
            print(f"| {name} | {total_bytes / 1e6:.1f} | {compute:.3g} | {'yes' if overlap else 'no'} | "
                  + " | ".join(cells) + " |")
    print("\nThe heads finish first, but they are a small part of the gradient: overlap moves these figures "
          "little. What limits a configuration is its gradient's bytes against its compute per step.")


if __name__ == "__main__":
    main()
