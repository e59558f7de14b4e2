#!/usr/bin/env python3
"""PyTorch's training speed for fedopt's models on the machine at hand.

`make bench` runs this when Debian's python3-torch is installed, so the
speed goals ("fedopt >= 1.5x PyTorch") are judged against PyTorch measured
next to fedopt, not against figures from another machine. Each model is the
PyTorch equivalent of fedopt's (same layers and shapes, see
docs/models.md), trained with plain SGD on random
data of its shapes for a few seconds after a warm-up; the figures are samples/s
of wall time and, in brackets, per CPU-second of this process (bench_train
prints both the same way; on a shared machine the second says more). One process measures one thread count, which must also be in
OMP_NUM_THREADS before torch loads: with idle OpenMP threads around, torch
1.13 spins them and runs slower on a 2-core machine (the Makefile does this).

Usage: OMP_NUM_THREADS=T torch_reference.py T
FEDOPT_BENCH_MODELS=cnn,resnet18gn restricts the models, FEDOPT_BENCH_BATCHES=20
the batch sizes; FEDOPT_BENCH_SECONDS sets the seconds per figure (default 4).
"""
import os
import sys
import time

try:
    import torch
    import torch.nn as nn
except ImportError:
    print("torch_reference: no PyTorch (python3-torch) here; skipped")
    sys.exit(0)


def gn(c):
    return nn.GroupNorm(2, c, eps=1e-3)


class Block(nn.Module):
    """Pre-activation basic block with a 1x1 conv + GN shortcut where channels change."""

    def __init__(self, cin, cout):
        super().__init__()
        self.gn1, self.conv1 = gn(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.gn2, self.conv2 = gn(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), gn(cout))
                      if cin != cout else None)

    def forward(self, x):
        h = self.conv1(torch.relu(self.gn1(x)))
        h = self.conv2(torch.relu(self.gn2(h)))
        return h + (self.short(x) if self.short is not None else x)


class ResNet18GN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), gn(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, c = [], 64
        for w in (64, 128, 256, 512):
            blocks += [Block(c, w), Block(w, w)]
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.gn, self.fc = gn(512), nn.Linear(512, classes)

    def forward(self, x):
        h = torch.relu(self.gn(self.blocks(self.stem(x))))
        return self.fc(h.mean((2, 3)))


class CharLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(90, 8)
        self.lstm = nn.LSTM(8, 256, 2, batch_first=True)
        self.fc = nn.Linear(256, 90)

    def forward(self, x):
        return self.fc(self.lstm(self.embed(x))[0]).reshape(-1, 90)


def image_task(model, shape, classes):
    def data(b):
        return torch.rand(b, *shape), torch.randint(0, classes, (b,))
    return model, data


def build(name):
    if name == "logreg":
        return image_task(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28), 10)
    if name == "mlp":
        return image_task(nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(),
                                        nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10)),
                          (1, 28, 28), 10)
    if name == "cnn":
        return image_task(nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3),
                                        nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
                                        nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(),
                                        nn.Dropout(0.5), nn.Linear(128, 10)), (1, 28, 28), 10)
    if name == "resnet18gn":
        return image_task(ResNet18GN(), (3, 24, 24), 10)
    if name == "charlstm":
        def data(b):
            return torch.randint(0, 90, (b, 80)), torch.randint(0, 90, (b * 80,))
        return CharLSTM(), data
    raise ValueError(name)


def measure(name, batch, threads, seconds):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model, data = build(name)
    x, y = data(batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    steps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    cpu = time.process_time() - c0
    return steps * batch / (time.perf_counter() - t0), steps * batch / cpu if cpu > 0 else 0.0


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    seconds = float(os.environ.get("FEDOPT_BENCH_SECONDS", "4"))
    only = os.environ.get("FEDOPT_BENCH_MODELS")
    batches_only = os.environ.get("FEDOPT_BENCH_BATCHES")
    plan = [("logreg", (20,)), ("mlp", (20, 64)), ("cnn", (20, 64)), ("charlstm", (4, 20)),
            ("resnet18gn", (20,))]
    print("PyTorch %s reference, %d thread%s: training samples/s of wall time"
          % (torch.__version__, threads, "" if threads == 1 else "s"))
    for name, batches in plan:
        if only and name not in only.split(","):
            continue
        for b in batches:
            if batches_only and str(b) not in batches_only.split(","):
                continue
            wall, per_cpu = measure(name, b, threads, seconds)
            print("  %-11s B=%-3d %9.1f [%9.1f]" % (name, b, wall, per_cpu), flush=True)


if __name__ == "__main__":
    main()
