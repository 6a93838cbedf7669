#!/usr/bin/python3
"""Writes the PyTorch fixtures of tests/fixtures (run from the project root):

    /usr/bin/python3 tools/make_fixtures.py [--out tests/fixtures]

Each case is a folder with model.safetensors (the reference's names and metadata, as
`trellis run` reads them), input.safetensors (as `trellis run` reads it) and
expected.safetensors: what tools/trellis_torch.py computes, in float64 and float32, for
the outputs and for the gradients of a fixed scalar loss. The parameters are drawn as
float32 numbers, so both precisions start from the same model. tests/test_reference.cpp
reads them. Deterministic: the same files on every run (seeded, no threads involved).

  core_<wnorm>_<dilation>  the bare core: x, h0, c0 -> out, h, c, aux; the loss is
                           sum(out*r_out) + sum(h*r_h) + sum(c*r_c) + sum(aux*r_aux).
  lm_<head>                the language model: tokens, h0, c0 -> log_probs; the loss is
                           the mean NLL of the targets plus aux * the aux NLLs.
  train_<optim>            twenty steps of a small language model on fixed batches, float64,
                           dropout off, clipping on, state carried: the loss of each step.
"""
import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trellis_torch as tt  # noqa: E402


def f32_values(shape, scale, gen):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).float().double()


def randomise(module, gen, scale=0.5):
    for p in module.parameters():
        p.data = f32_values(p.shape, scale, gen)
    core = module.core if isinstance(module, tt.LanguageModel) else module
    if core.wnorm:  # g stays positive, as after the init g = ||v||
        for name in ("weight1_g", "weight2_g"):
            p = getattr(core.full_conv, name)
            p.data = p.data.abs() + 0.25


def core_case(out_dir, wnorm, dilation, gen):
    ninp, nhid, nout, nlevels, aux_f = 3, 5, 2, 6, 2
    N, L = 2, 9
    core = tt.TrellisCore(ninp, nhid, nout, nlevels, dilation, wnorm, aux_f)
    randomise(core, gen)
    q = core.q
    x = f32_values((N, ninp, L), 1.0, gen)
    h0 = f32_values((N, q, 1), 0.5, gen)
    c0 = f32_values((N, q, 1), 0.5, gen)
    r = {"r_out": f32_values((N, L, nout), 1.0, gen), "r_h": f32_values((N, q, 1), 1.0, gen),
         "r_c": f32_values((N, q, 1), 1.0, gen), "r_aux": f32_values((N, core.naux(), L, nout), 1.0, gen)}
    expected = {}
    for tag, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        m = copy.deepcopy(core).to(dtype)
        xi, hi, ci = (t.detach().clone().to(dtype).requires_grad_() for t in (x, h0, c0))
        out, h, c, aux = m(xi, hi, ci)
        loss = sum((a * b.to(dtype)).sum() for a, b in
                   ((out, r["r_out"]), (h, r["r_h"]), (c, r["r_c"]), (aux, r["r_aux"])))
        loss.backward()
        for name, t in (("out", out), ("h", h), ("c", c), ("aux", aux)):
            expected[f"{tag}.{name}"] = t.detach()
        for name, p in m.full_conv.named_parameters():
            expected[f"{tag}.grad.full_conv.{name}"] = p.grad.detach()
        for name, t in (("x", xi), ("h0", hi), ("c0", ci)):
            expected[f"{tag}.grad.{name}"] = t.grad.detach()
    expected.update(r)
    write_case(out_dir, core.reference_state_dict(), core.config(), {"x": x, "h": h0, "c": c0}, expected)


def lm_case(out_dir, n_experts, gen):
    ntoken, ninp, nhid, nout, nlevels, aux_f = 13, 4, 5, 4, 6, 3
    N, L, aux_weight = 2, 8, 0.3
    lm = tt.LanguageModel(ntoken, ninp, nhid, nout, nlevels, [1, 2], True, aux_f, n_experts)
    randomise(lm, gen)
    q = lm.core.q
    tokens = torch.randint(0, ntoken, (N, L), generator=gen)
    targets = torch.randint(0, ntoken, (N, L), generator=gen)
    h0 = f32_values((N, q, 1), 0.5, gen)
    c0 = f32_values((N, q, 1), 0.5, gen)
    expected = {"targets": targets, "aux_weight": torch.tensor([aux_weight], dtype=torch.float64)}
    for tag, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        m = copy.deepcopy(lm).to(dtype)
        logp, _, h, c = m(tokens, h0.to(dtype), c0.to(dtype))
        loss, _, _ = m.loss(tokens, targets, 0, aux_weight, h0.to(dtype), c0.to(dtype))
        loss.backward()
        expected[f"{tag}.log_probs"] = logp.detach()
        expected[f"{tag}.h"] = h.detach()
        expected[f"{tag}.c"] = c.detach()
        expected[f"{tag}.loss"] = loss.detach().reshape(1)
        for name, p in named_reference_parameters(m).items():
            expected[f"{tag}.grad.{name}"] = p.grad.detach()
    write_case(out_dir, lm.reference_state_dict(), lm.config(), {"tokens": tokens, "h": h0, "c": c0}, expected)


def named_reference_parameters(lm):
    """The language model's parameters under one reference name each."""
    out = {"encoder.weight": lm.encoder.weight, "decoder.bias": lm.decoder_bias}
    for name, p in lm.core.full_conv.named_parameters():
        out["tnet.module.full_conv." + name + ("_raw" if name.startswith("weight") and not name.endswith("_g") else "")] = p
    if lm.n_experts > 0:
        for a in ("prior", "latent"):
            out[f"mixsoft.{a}.weight"] = getattr(lm, a).weight
            out[f"mixsoft.{a}.bias"] = getattr(lm, a).bias
    return out


def train_case(out_dir, optim, gen):
    ntoken, ninp, nhid, nout, nlevels = 17, 6, 8, 6, 5
    N, L, steps, clip = 3, 10, 20, 0.25
    lm = tt.LanguageModel(ntoken, ninp, nhid, nout, nlevels, [1, 2], True, 0, 0)
    # Larger than the reference's init so that twenty steps move the loss visibly.
    for name, p in lm.core.full_conv.named_parameters():
        p.data = f32_values(p.shape, 0.3, gen)
    for name in ("weight1", "weight2"):
        v = getattr(lm.core.full_conv, name + "_v")
        getattr(lm.core.full_conv, name + "_g").data = v.data.pow(2).sum(dim=(1, 2), keepdim=True).sqrt().float().double()
    lm.encoder.weight.data = ((torch.rand(ntoken, ninp, generator=gen, dtype=torch.float64) - 0.5)
                              .float().double())
    lm.decoder_bias.data.zero_()
    model_sd = {k: v.clone() for k, v in lm.reference_state_dict().items()}
    # A learnable stream: next = (3 * previous + 1) mod ntoken, with one token in five random.
    flat = torch.empty(N, steps * L + 1, dtype=torch.int64)
    flat[:, 0] = torch.randint(0, ntoken, (N,), generator=gen)
    noise = torch.randint(0, ntoken, (N, steps * L + 1), generator=gen)
    keep = torch.rand(N, steps * L + 1, generator=gen) < 0.8
    for t in range(1, steps * L + 1):
        flat[:, t] = torch.where(keep[:, t], (3 * flat[:, t - 1] + 1) % ntoken, noise[:, t])
    # Contiguous segments, state carried from one to the next (the reference's repack mode).
    stream = torch.stack([flat[:, s * L:s * L + L + 1] for s in range(steps)])
    params = list(named_reference_parameters(lm).values())
    if optim == "adam":
        opt = torch.optim.Adam(params, lr=2e-3, weight_decay=1e-6)
        hyper = {"optim": "adam", "lr": "0.002", "wdecay": "1e-06", "momentum": "0"}
    else:
        opt = torch.optim.SGD(params, lr=1.0)
        hyper = {"optim": "sgd", "lr": "1", "wdecay": "0", "momentum": "0"}
    hyper["clip"] = str(clip)
    losses = []
    h = c = None
    for s in range(steps):
        opt.zero_grad()
        loss, h, c = lm.loss(stream[s, :, :L], stream[s, :, 1:], 0, 0.0, h, c)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        h, c = h.detach(), c.detach()
        losses.append(loss.item())
    config = lm.config()
    config.update({"train." + k: v for k, v in hyper.items()})
    expected = {"targets": stream[:, :, 1:].contiguous(), "losses": torch.tensor(losses, dtype=torch.float64)}
    write_case(out_dir, model_sd, config, {"tokens": stream[:, :, :L].contiguous()}, expected)


def write_case(out_dir, model, config, inputs, expected):
    os.makedirs(out_dir, exist_ok=True)
    tt.write_safetensors(os.path.join(out_dir, "model.safetensors"), model, config)
    tt.write_safetensors(os.path.join(out_dir, "input.safetensors"), inputs)
    tt.write_safetensors(os.path.join(out_dir, "expected.safetensors"), expected)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(20190506)
    for wnorm in (False, True):
        for dilation in ([1], [1, 2], [2, 1, 3]):
            name = f"core_{'wnorm' if wnorm else 'plain'}_d{''.join(map(str, dilation))}"
            core_case(os.path.join(args.out, name), wnorm, dilation, gen)
    lm_case(os.path.join(args.out, "lm_tied"), 0, gen)
    lm_case(os.path.join(args.out, "lm_mos"), 3, gen)
    train_case(os.path.join(args.out, "train_adam"), "adam", gen)
    train_case(os.path.join(args.out, "train_sgd"), "sgd", gen)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
