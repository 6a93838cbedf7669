#!/usr/bin/python3
"""Checks tools/trellis_torch.py (the oracle behind tests/fixtures) against the reference
code itself, so that the fixtures stand for the reference and not only for our reading
of the spec:

    TRELLISNET_REF=<checkout of locuslab/trellisnet at ec1de0a>/TrellisNet \\
        /usr/bin/python3 tools/check_torch_model.py

Random float64 models, with and without weight normalisation, dilation cycles [1],
[1, 2] and [2, 1, 3], aux outputs, the language model with a tied decoder and with a
mixture of softmaxes: outputs, states, aux outputs and the state_dict key sets must
agree (max |difference| at most 1e-12). The reference calls .cuda(); here that is the
identity, so it runs on the CPU. Nothing of the reference is copied into the project.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trellis_torch as tt  # noqa: E402


def main():
    ref_dir = os.environ.get("TRELLISNET_REF")
    if not ref_dir or not os.path.isfile(os.path.join(ref_dir, "trellisnet.py")):
        sys.exit("check_torch_model: set TRELLISNET_REF to the TrellisNet/ folder of locuslab/trellisnet (ec1de0a)")
    sys.path.insert(0, ref_dir)
    torch.Tensor.cuda = lambda self, *a, **k: self
    import model as ref_model  # noqa: E402
    import trellisnet as ref_core  # noqa: E402

    # The reference makes its zero states with the default dtype: float64 throughout.
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    worst = 0.0

    def agree(what, a, b):
        nonlocal worst
        d = float((a - b).abs().max())
        worst = max(worst, d)
        if d > 1e-12:
            sys.exit(f"check_torch_model: {what} differs by {d}")

    for wnorm in (False, True):
        for dilation in ([1], [1, 2], [2, 1, 3]):
            ninp, nhid, nout, nlevels, aux = 3, 5, 2, 5, 2
            ref = ref_core.TrellisNet(ninp, nhid, nout, nlevels=nlevels, wnorm=wnorm, aux_frequency=aux,
                                      dilation=dilation).double()
            for p in ref.parameters():
                p.data = torch.randn_like(p) * 0.5
            ours = tt.TrellisCore(ninp, nhid, nout, nlevels, dilation, wnorm, aux)
            sd = {k.replace("full_conv.", ""): v for k, v in ref.state_dict().items()}
            for n, p in ours.full_conv.named_parameters():
                p.data = sd[n].clone().reshape(p.shape)
            N, L, q = 2, 7, nhid + nout
            x = torch.randn(N, ninp, L, dtype=torch.float64)
            h0 = torch.randn(N, q, 1, dtype=torch.float64)
            c0 = torch.randn(N, q, 1, dtype=torch.float64)
            o1, (h1, c1), a1 = ref(x, (h0, c0))
            o2, h2, c2, a2 = ours(x, h0, c0)
            for what, a, b in (("out", o1, o2), ("h", h1, h2), ("c", c1, c2), ("aux", a1, a2)):
                agree(f"core wnorm={wnorm} dilation={dilation}: {what}", a, b)
            if sorted(ref.state_dict()) != sorted(ours.reference_state_dict()):
                sys.exit(f"check_torch_model: core key sets differ: {sorted(ref.state_dict())}")

    for n_experts, wnorm in ((0, False), (0, True), (3, True)):
        ntoken, ninp, nhid, nout, nlevels, aux = 11, 4, 5, 4, 5, 2
        ref = ref_model.TrellisNetModel(ntoken, ninp, nhid, nout, nlevels, dilation=[1, 2], wnorm=wnorm, aux=True,
                                        aux_frequency=aux, n_experts=n_experts).double().eval()
        for p in ref.parameters():
            p.data = torch.randn_like(p) * 0.5
        ours = tt.LanguageModel(ntoken, ninp, nhid, nout, nlevels, [1, 2], wnorm, aux, n_experts)
        sd = ref.state_dict()
        for n, p in ours.core.full_conv.named_parameters():
            raw = "_raw" if n.startswith("weight") and not n.endswith("_g") else ""
            p.data = sd["tnet.module.full_conv." + n + raw].clone()
        ours.encoder.weight.data = sd["encoder.weight"].clone()
        ours.decoder_bias.data = sd["decoder.bias"].clone()
        if n_experts:
            for a in ("prior", "latent"):
                getattr(ours, a).weight.data = sd[f"mixsoft.{a}.weight"].clone()
                getattr(ours, a).bias.data = sd[f"mixsoft.{a}.bias"].clone()
        N, L, q = 2, 6, nhid + nout
        tokens = torch.randint(0, ntoken, (N, L))
        h0 = torch.randn(N, q, 1, dtype=torch.float64)
        c0 = torch.randn(N, q, 1, dtype=torch.float64)
        (_, _, dec), (h1, c1), adec = ref(tokens, (h0, c0))
        if n_experts == 0:  # the reference's decoder gives logits; its loss applies the softmax
            dec, adec = F.log_softmax(dec, -1), F.log_softmax(adec, -1)
        lp, alp, h2, c2 = ours(tokens, h0, c0)
        for what, a, b in (("log_probs", dec, lp), ("aux log_probs", adec, alp), ("h", h1, h2), ("c", c1, c2)):
            agree(f"language model n_experts={n_experts} wnorm={wnorm}: {what}", a, b)
        mine = ours.reference_state_dict()
        if sorted(mine) != sorted(sd) or not all(torch.equal(mine[k], sd[k]) for k in sd):
            sys.exit(f"check_torch_model: language-model state_dicts differ: {set(sd) ^ set(mine)}")
    print(f"tools/trellis_torch.py agrees with the reference at {ref_dir}: max |difference| {worst:.3g}")


if __name__ == "__main__":
    main()
