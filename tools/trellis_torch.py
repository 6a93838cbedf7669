#!/usr/bin/python3
"""TrellisNet in PyTorch, written from the paper and the reference code's math, for two
jobs:

  1. bringing a PyTorch TrellisNet over to the C++ library: `convert` writes a
     state_dict (from torch.save of a state_dict, or of a whole reference model when
     TRELLISNET_REF is on the path) as safetensors with the configuration as metadata,
     in the names of the reference code, which `trellis run`, `trellis eval` and
     trellis::read_language_model read;
  2. making the test fixtures of tests/fixtures (tools/make_fixtures.py).

It is a test oracle, never part of the library. It runs with Debian's python3-torch
(1.13) and writes safetensors itself (Debian 12 has no safetensors package):

    /usr/bin/python3 tools/trellis_torch.py convert --state-dict model.pt --out model.safetensors \\
        --nout 200 --nlevels 140 --dilation [1] [--aux-freq 80] [--language-model]

Only training-free forward semantics are implemented here (no dropout, no weight drop):
that is what the fixtures and the conversion need.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}
TORCH_DTYPES = {v: k for k, v in DTYPES.items()}


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} and string metadata; to a temporary name, then renamed."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype not in DTYPES:
            raise ValueError(f"write_safetensors: tensor '{name}' has dtype {t.dtype}, not one of {list(DTYPES)}")
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """Returns ({name: tensor}, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header of {n} bytes runs past the end of the file ({len(raw)} bytes)")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        dtype = TORCH_DTYPES[h["dtype"]]
        buf = bytearray(raw[8 + n + b:8 + n + e])
        t = torch.frombuffer(buf, dtype=dtype if dtype != torch.bfloat16 else torch.int16) if e > b \
            else torch.empty(0, dtype=dtype)
        if dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        out[name] = t.reshape(h["shape"]).clone()
    return out, meta


# ---------------------------------------------------------------- the model

class FullConv(torch.nn.Module):
    """The shared weights, under the reference's names: weight1 (4q, p, 2) without bias,
    weight2 (4q, q, 2) and bias2 (4q); with weight normalisation g (4q, 1, 1) and v."""

    def __init__(self, ninp, q, wnorm, dtype=torch.float64):
        super().__init__()
        self.wnorm = wnorm
        opts = dict(dtype=dtype)
        if wnorm:
            self.weight1_v = torch.nn.Parameter(torch.zeros(4 * q, ninp, 2, **opts))
            self.weight1_g = torch.nn.Parameter(torch.zeros(4 * q, 1, 1, **opts))
            self.weight2_v = torch.nn.Parameter(torch.zeros(4 * q, q, 2, **opts))
            self.weight2_g = torch.nn.Parameter(torch.zeros(4 * q, 1, 1, **opts))
        else:
            self.weight1 = torch.nn.Parameter(torch.zeros(4 * q, ninp, 2, **opts))
            self.weight2 = torch.nn.Parameter(torch.zeros(4 * q, q, 2, **opts))
        self.bias2 = torch.nn.Parameter(torch.zeros(4 * q, **opts))

    def weights(self):
        if not self.wnorm:
            return self.weight1, self.weight2
        # w = g v / ||v||, the norm over (in_channels, k) of each output row, no epsilon.
        n1 = self.weight1_v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
        n2 = self.weight2_v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
        return self.weight1_g * self.weight1_v / n1, self.weight2_g * self.weight2_v / n2


class TrellisCore(torch.nn.Module):
    """The core: x (N, p, L), h0 and c0 (N, q, 1) -> out (N, L, nout), h, c (N, q, 1) and
    aux (N, naux, L, nout), the forward pass of the paper and the reference code."""

    def __init__(self, ninp, nhid, nout, nlevels, dilation=(1,), wnorm=True, aux_frequency=0, dtype=torch.float64):
        super().__init__()
        self.ninp, self.nhid, self.nout, self.nlevels = ninp, nhid, nout, nlevels
        self.q = nhid + nout
        self.dilation = list(dilation)
        self.wnorm = wnorm
        self.aux_frequency = aux_frequency
        self.full_conv = FullConv(ninp, self.q, wnorm, dtype)

    def config(self):
        return {"ninp": str(self.ninp), "nhid": str(self.nhid), "nout": str(self.nout), "nlevels": str(self.nlevels),
                "dilation": json.dumps(self.dilation), "aux_frequency": str(self.aux_frequency),
                "wnorm": "true" if self.wnorm else "false"}

    def naux(self):
        F_ = self.aux_frequency
        return self.nlevels // F_ if 0 < F_ <= self.nlevels else 0

    def forward(self, x, h0=None, c0=None):
        N, _, L = x.shape
        q = self.q
        if h0 is None:
            h0 = x.new_zeros(N, q, 1)
        if c0 is None:
            c0 = x.new_zeros(N, q, 1)
        w1, w2 = self.full_conv.weights()
        injection = {}
        for d in sorted(set(self.dilation)):
            # Input padding is zero: U_t = W1x x_{t-d} + W2x x_t.
            injection[d] = F.conv1d(F.pad(x, (d, 0)), w1, dilation=d)
        z = x.new_zeros(N, q, L)
        c = x.new_zeros(N, q, L)
        aux = []
        for i in range(1, self.nlevels + 1):
            d = self.dilation[(i - 1) % len(self.dilation)]
            # The hidden history is the carried state, repeated d times.
            z_pad = torch.cat([h0.expand(N, q, d), z], dim=2)
            c_pad = torch.cat([c0.expand(N, q, d), c], dim=2)
            a = injection[d] + F.conv1d(z_pad, w2, self.full_conv.bias2, dilation=d)
            ig, og, gg, fg = a.split(q, dim=1)  # gate order i, o, g, f
            c = torch.sigmoid(fg) * c_pad[:, :, :L] + torch.sigmoid(ig) * torch.tanh(gg)
            z = torch.sigmoid(og) * torch.tanh(c)
            if self.aux_frequency > 0 and i % self.aux_frequency == 0:
                aux.append(z[:, q - self.nout:, :].transpose(1, 2))
        out = z[:, q - self.nout:, :].transpose(1, 2)
        aux = torch.stack(aux, dim=1) if aux else x.new_zeros(N, 0, L, self.nout)
        return out, z[:, :, L - 1:], c[:, :, L - 1:], aux

    def reference_state_dict(self, prefix="", raw=False):
        suffix = "_raw" if raw else ""
        out = {}
        for name, p in self.full_conv.named_parameters():
            key = name + suffix if name.startswith("weight") and not name.endswith("_g") else name
            out[prefix + "full_conv." + key] = p.detach()
        return out


class LanguageModel(torch.nn.Module):
    """Embedding, core, tied decoder or mixture of softmaxes; log-probabilities out."""

    def __init__(self, ntoken, ninp, nhid, nout, nlevels, dilation=(1,), wnorm=True, aux_frequency=0, n_experts=0,
                 dtype=torch.float64):
        super().__init__()
        if n_experts == 0 and nout != ninp:
            raise ValueError("a tied decoder needs nout == ninp")
        self.ntoken, self.n_experts = ntoken, n_experts
        self.encoder = torch.nn.Embedding(ntoken, ninp, dtype=dtype)
        self.core = TrellisCore(ninp, nhid, nout, nlevels, dilation, wnorm, aux_frequency, dtype)
        self.decoder_bias = torch.nn.Parameter(torch.zeros(ntoken, dtype=dtype))
        if n_experts > 0:
            self.prior = torch.nn.Linear(nout, n_experts, dtype=dtype)
            self.latent = torch.nn.Linear(nout, n_experts * ninp, dtype=dtype)

    def config(self):
        c = self.core.config()
        c.update({"ntoken": str(self.ntoken), "n_experts": str(self.n_experts)})
        return c

    def head(self, y):
        """y (..., nout) -> log-probabilities (..., ntoken)."""
        W = self.encoder.weight  # the decoder is tied to the embedding
        if self.n_experts == 0:
            return F.log_softmax(y @ W.t() + self.decoder_bias, dim=-1)
        m, ninp = self.n_experts, self.encoder.weight.shape[1]
        prior = F.softmax(self.prior(y), dim=-1)                                    # (..., m)
        latent = torch.tanh(self.latent(y)).reshape(*y.shape[:-1], m, ninp)       # (..., m, ninp)
        probs = F.softmax(latent @ W.t() + self.decoder_bias, dim=-1)              # (..., m, ntoken)
        mix = (prior.unsqueeze(-1) * probs).sum(dim=-2)
        return torch.log(mix + 1e-8)

    def forward(self, tokens, h0=None, c0=None):
        """tokens (N, L) -> log_probs (N, L, ntoken), aux log_probs (N, naux, L, ntoken), h, c."""
        x = self.encoder(tokens).transpose(1, 2)
        out, h, c, aux = self.core(x, h0, c0)
        return self.head(out), self.head(aux), h, c

    def loss(self, tokens, targets, scored_from=0, aux_weight=0.0, h0=None, c0=None):
        """Mean NLL over the scored positions + aux_weight * the aux NLLs; and the new state."""
        logp, aux, h, c = self(tokens, h0, c0)
        t = targets[:, scored_from:]
        nll = lambda lp: -lp[:, scored_from:].gather(-1, t.unsqueeze(-1)).mean()
        total = nll(logp)
        for k in range(aux.shape[1]):
            total = total + aux_weight * nll(aux[:, k])
        return total, h, c

    def reference_state_dict(self):
        """The reference's full key set: weight drop's `_raw` names, both prefixes, and
        decoder.weight beside encoder.weight."""
        out = {}
        for prefix in ("tnet.module.", "network.0.module."):
            out.update(self.core.reference_state_dict(prefix, raw=True))
        out["encoder.weight"] = self.encoder.weight.detach()
        out["decoder.weight"] = self.encoder.weight.detach()
        out["decoder.bias"] = self.decoder_bias.detach()
        if self.n_experts > 0:
            for prefix in ("mixsoft.", "network.1."):
                out[prefix + "prior.weight"] = self.prior.weight.detach()
                out[prefix + "prior.bias"] = self.prior.bias.detach()
                out[prefix + "latent.weight"] = self.latent.weight.detach()
                out[prefix + "latent.bias"] = self.latent.bias.detach()
                out[prefix + "decoder.weight"] = self.encoder.weight.detach()
                out[prefix + "decoder.bias"] = self.decoder_bias.detach()
        return out


# ---------------------------------------------------------------- convert

def load_state_dict(path):
    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise SystemExit(f"convert: {path} holds a {type(obj).__name__}, not a state_dict or a module")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def convert(args):
    if os.environ.get("TRELLISNET_REF"):
        sys.path.insert(0, os.environ["TRELLISNET_REF"])  # unpickling a whole reference model needs its classes
    sd = load_state_dict(args.state_dict)
    names = list(sd)

    def kernel(stem):
        # weight drop renames v to v_raw; without weight norm the names are weight1 / weight2
        for k in names:
            if k.split("full_conv.")[-1] in (stem + "_v_raw", stem + "_v", stem + "_raw", stem):
                return sd[k]
        return None

    w1, w2 = kernel("weight1"), kernel("weight2")
    if w1 is None or w2 is None:
        raise SystemExit(f"convert: {args.state_dict} has no full_conv.weight1/weight2 tensors (keys: {names[:8]} ...)")
    q, ninp = w2.shape[1], w1.shape[1]
    if args.nout >= q:
        raise SystemExit(f"convert: --nout {args.nout} must be below q = {q} (weight2 is {tuple(w2.shape)})")
    meta = {"ninp": str(ninp), "nhid": str(q - args.nout), "nout": str(args.nout), "nlevels": str(args.nlevels),
            "dilation": json.dumps(json.loads(args.dilation)), "aux_frequency": str(args.aux_freq),
            "wnorm": "true" if any(k.endswith("weight1_g") for k in names) else "false"}
    if "encoder.weight" in sd:
        meta["ntoken"] = str(sd["encoder.weight"].shape[0])
        prior = next((sd[k] for k in names if k.endswith("prior.weight")), None)
        meta["n_experts"] = str(prior.shape[0] if prior is not None else 0)
    dtype = {"f32": torch.float32, "f64": torch.float64, "keep": None}[args.dtype]
    out = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in sd.items()}
    write_safetensors(args.out, out, meta)
    print(f"wrote {args.out}: {len(out)} tensors, " + ", ".join(f"{k} {v}" for k, v in meta.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="a PyTorch TrellisNet state_dict -> safetensors for the C++ library")
    c.add_argument("--state-dict", required=True, help="torch.save file of a state_dict (or a whole module)")
    c.add_argument("--out", required=True)
    c.add_argument("--nout", type=int, required=True, help="the reference's nout (not in the weights' shapes)")
    c.add_argument("--nlevels", type=int, required=True)
    c.add_argument("--dilation", default="[1]")
    c.add_argument("--aux-freq", type=int, default=0)
    c.add_argument("--dtype", choices=["f32", "f64", "keep"], default="keep")
    args = ap.parse_args()
    if args.cmd == "convert":
        convert(args)


if __name__ == "__main__":
    main()
