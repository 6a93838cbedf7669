#!/usr/bin/python3
"""Loads a checkpoint of `trellis train` into the reference PyTorch model with
load_state_dict(strict=True): the check that our files carry the reference's full key
set and shapes (docs/file-formats.md, "Checkpoint").

    TRELLISNET_REF=/path/to/trellisnet/TrellisNet /usr/bin/python3 tools/reference_load_check.py RUN/checkpoint.safetensors

TRELLISNET_REF is the TrellisNet/ folder of a checkout of locuslab/trellisnet at ec1de0a
(never committed here). Needs Debian's python3-torch and numpy. Language models
(metadata `ntoken`) load into model.TrellisNetModel, classifiers into
seq_MNIST_CIFAR/model.TrellisNetModel; both are built with weight drop, as the
reference trains them, so the `_raw` names apply.
"""
import importlib.util
import json
import os
import struct
import sys

import numpy as np
import torch

DTYPES = {'F64': np.float64, 'F32': np.float32, 'I64': np.int64, 'I32': np.int32, 'U8': np.uint8}
NOT_MODEL = ('optim.', 'state.', 'trainer.')
NOT_MODEL_NAMES = ('step', 'rng', 'progress', 'permutation')


def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop('__metadata__', {})
    tensors = {}
    for name, t in header.items():
        begin, end = t['data_offsets']
        tensors[name] = np.frombuffer(data[begin:end], dtype=DTYPES[t['dtype']]).reshape(t['shape'])
    return tensors, meta


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    ref = os.environ.get('TRELLISNET_REF')
    if not ref or not os.path.isfile(os.path.join(ref, 'trellisnet.py')):
        sys.exit('reference_load_check: set TRELLISNET_REF to the TrellisNet/ folder of locuslab/trellisnet')
    sys.path.insert(0, ref)
    tensors, meta = read_safetensors(sys.argv[1])
    common = dict(ninp=int(meta['ninp']), nhid=int(meta['nhid']), nout=int(meta['nout']),
                  nlevels=int(meta['nlevels']), dilation=json.loads(meta['dilation']),
                  wnorm=meta['wnorm'] == 'true', wdrop=0.1)
    aux = int(meta['aux_frequency'])
    if 'ntoken' in meta:
        model = load_module(os.path.join(ref, 'model.py'), 'reference_lm').TrellisNetModel(
            ntoken=int(meta['ntoken']), n_experts=int(meta['n_experts']), aux_frequency=aux if aux > 0 else 10 ** 6,
            **common)
    else:
        model = load_module(os.path.join(ref, 'seq_MNIST_CIFAR', 'model.py'), 'reference_seq').TrellisNetModel(
            aux_frequency=aux if aux > 0 else 10 ** 6, **common)
    ours = {k: v for k, v in tensors.items() if not k.startswith(NOT_MODEL) and k not in NOT_MODEL_NAMES}
    theirs = model.state_dict()
    missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    if missing or extra:
        sys.exit('reference_load_check: missing %s, unexpected %s' % (missing, extra))
    model.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ours.items()}, strict=True)
    print('load_state_dict(strict=True) took all %d tensors of %s' % (len(ours), sys.argv[1]))


if __name__ == '__main__':
    main()
