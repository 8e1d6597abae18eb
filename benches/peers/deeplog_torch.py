#!/usr/bin/env python3
"""The PyTorch peer of benches/score.sh: a DeepLog-style next-key model, timed on CPU.

    python3 benches/peers/deeplog_torch.py [--threads 2] [--seconds 3]

DeepLog (Du et al., CCS 2017): each log key is embedded (64), a 2-layer LSTM of 64 reads the
window of the 10 previous keys, a linear layer scores the 30 keys, and a key is normal when
it is among the top g (9) predictions. The weights are random: speed does not depend on them.
Prints one line per batch size: `batch B: W windows/s` (windows scored per second, top-k
included), measured over about --seconds each after a warm-up.
"""
import argparse
import time

import torch
from torch import nn

KEYS, WINDOW, EMBEDDING, HIDDEN, LAYERS, TOP = 30, 10, 64, 64, 2, 9


class DeepLog(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(KEYS, EMBEDDING)
        self.lstm = nn.LSTM(EMBEDDING, HIDDEN, LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, KEYS)

    def forward(self, windows):
        states, _ = self.lstm(self.embedding(windows))
        return self.head(states[:, -1, :])


def windows_per_second(model, batch, seconds):
    generator = torch.Generator().manual_seed(42)
    windows = torch.randint(0, KEYS, (batch, WINDOW), generator=generator)
    following = torch.randint(0, KEYS, (batch,), generator=generator)
    with torch.inference_mode():
        for _ in range(3):
            model(windows)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            top = model(windows).topk(TOP, dim=1).indices
            (top == following.unsqueeze(1)).any(dim=1)
            done += batch
        return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    model = DeepLog().eval()
    for batch in (1, 1024):
        print(f"batch {batch}: {windows_per_second(model, batch, args.seconds):.0f} windows/s")


if __name__ == "__main__":
    main()
