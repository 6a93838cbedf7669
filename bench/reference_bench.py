#!/usr/bin/python3
"""The PyTorch side of bench/compare: times the reference TrellisNet core on the CPU in
the benchmark configurations of bench/bench_trellis.cpp (weight norm on, dropout off,
random x, zero state; "train step" = forward + backward of mean(out^2)), and prints one
JSON object: {"implementation": ..., "threads": T, "rows": [{"config", "forward_s",
"train_step_s"}]}, medians.

With TRELLISNET_REF set (the TrellisNet/ folder of locuslab/trellisnet at ec1de0a) it
times the reference code itself, its .cuda() calls made the identity so that it runs on
the CPU; without it, tools/trellis_torch.py's TrellisCore (written from the paper
and the reference code's math; the same math, not the reference's kernels), and says so.

    /usr/bin/python3 bench/reference_bench.py --threads 2 --configs tiny,seqmnist,charptb-cpu
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

# The benchmark configurations of bench/bench_trellis.cpp.
CONFIGS = {  # name: N, L, ninp, nhid, nout, levels, dilation, repetitions
    "tiny": (4, 32, 8, 24, 8, 6, [1], 5),
    "seqmnist": (64, 784, 1, 120, 10, 11, [1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512], 3),
    "charptb-cpu": (24, 140, 200, 1050, 200, 4, [1], 3),
}


def build(name, use_reference):
    N, L, ninp, nhid, nout, levels, dilation, _ = CONFIGS[name]
    if use_reference:
        import trellisnet
        net = trellisnet.TrellisNet(ninp, nhid, nout, nlevels=levels, kernel_size=2, dropouth=0.0, wnorm=True,
                                    aux_frequency=levels + 1, dilation=dilation)
        run = lambda x, hc: net(x, hc, aux=False)[0]  # noqa: E731
    else:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
        import trellis_torch
        net = trellis_torch.TrellisCore(ninp, nhid, nout, levels, dilation, True, 0, dtype=torch.float32)
        with torch.no_grad():  # the reference's init: N(0, 0.01), g = ||v||
            for n, p in net.full_conv.named_parameters():
                p.normal_(0, 0.01)
            for w in ("weight1", "weight2"):
                v = getattr(net.full_conv, w + "_v")
                getattr(net.full_conv, w + "_g").copy_(v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt())
        run = lambda x, hc: net(x, hc[0], hc[1])[0]  # noqa: E731
    q = nhid + nout
    x = torch.randn(N, ninp, L)
    hc = (torch.zeros(N, q, 1), torch.zeros(N, q, 1))
    return net, run, x, hc


def median_seconds(f, reps):
    f()  # warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="tiny,seqmnist,charptb-cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = os.environ.get("TRELLISNET_REF", "")
    use_reference = bool(ref)
    if use_reference:
        if not os.path.isfile(os.path.join(ref, "trellisnet.py")):
            sys.exit(f"reference_bench: TRELLISNET_REF={ref} has no trellisnet.py (want the TrellisNet/ folder)")
        sys.path.insert(0, ref)
        torch.Tensor.cuda = lambda self, *a, **k: self  # the reference allocates its states with .cuda()
    rows = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            sys.exit(f"reference_bench: unknown config {name} (known: {', '.join(CONFIGS)})")
        torch.manual_seed(0)
        with contextlib.redirect_stdout(sys.stderr):  # the reference prints as it builds
            net, run, x, hc = build(name, use_reference)
        reps = CONFIGS[name][-1]

        def forward():
            with torch.no_grad():
                run(x, hc)

        def train_step():
            net.zero_grad(set_to_none=True)
            out = run(x, hc)
            out.pow(2).mean().backward()

        rows.append({"config": name, "forward_s": median_seconds(forward, reps),
                     "train_step_s": median_seconds(train_step, reps)})
        print(f"reference_bench: {name} done", file=sys.stderr)
    impl = (f"the reference code (TRELLISNET_REF={ref})" if use_reference
            else "tools/trellis_torch.py (TRELLISNET_REF not set: the spec's math in PyTorch, not the reference's code)")
    print(json.dumps({"implementation": impl, "torch": torch.__version__, "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
