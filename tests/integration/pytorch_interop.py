#!/usr/bin/python3
"""PyTorch side of test_engine_pytorch.sh: fedopt's models are PyTorch's.

  pytorch_interop.py eval MODEL FILE FMNIST_DIR     -> prints "loss accuracy" of FILE
      evaluated by an independent PyTorch definition of MODEL (strict
      load_state_dict of the safetensors file, read by hand here)
  pytorch_interop.py export MODEL FILE SEED         -> writes a PyTorch-initialised
      MODEL to FILE in safetensors format (written by hand here)

Only the Python standard library and torch are used (no safetensors package)."""
import gzip
import json
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class LogReg(nn.Module):
    def __init__(self, d=784, c=10):
        super().__init__()
        self.fc = nn.Linear(d, c)

    def forward(self, x):
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    def __init__(self, c=10):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 200), nn.Linear(200, 200), nn.Linear(200, c)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self, c=10):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, c)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class AE(nn.Module):
    sizes = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]

    def __init__(self):
        super().__init__()
        names = ["enc1", "enc2", "enc3", "enc4", "dec1", "dec2", "dec3", "dec4"]
        for i, n in enumerate(names):
            setattr(self, n, nn.Linear(self.sizes[i], self.sizes[i + 1]))
        self.names = names

    def forward(self, x):
        x = x.flatten(1)
        for n in self.names:
            x = getattr(self, n)(x)
            if n != "enc4":
                x = torch.sigmoid(x)
        return x


MODELS = {"logreg": LogReg, "mlp": MLP, "cnn": CNN, "autoencoder": AE}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", t
        b, e = t["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(t["shape"])
    return out


def write_safetensors(path, sd):
    header, chunks, off = {}, [], 0
    for name, t in sd.items():
        raw = t.detach().contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        blob = f.read()
    ndim = blob[3]
    dims = struct.unpack(">" + "I" * ndim, blob[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(blob[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def main():
    torch.set_num_threads(1)
    cmd, model = sys.argv[1], sys.argv[2]
    net = MODELS[model]()
    if cmd == "export":
        torch.manual_seed(int(sys.argv[4]))
        net = MODELS[model]()
        write_safetensors(sys.argv[3], net.state_dict())
        return
    net.load_state_dict(read_safetensors(sys.argv[3]), strict=True)
    net.eval()
    d = sys.argv[4]
    x = read_idx(d + "/t10k-images-idx3-ubyte.gz").float().div(255.0).unsqueeze(1)
    y = read_idx(d + "/t10k-labels-idx1-ubyte.gz").long()
    with torch.no_grad():
        total, correct, n = 0.0, 0, 0
        for i in range(0, x.shape[0], 500):
            xb, yb = x[i:i + 500], y[i:i + 500]
            out = net(xb)
            if model == "autoencoder":
                total += F.mse_loss(out, xb.flatten(1), reduction="sum").item() / 784
            else:
                total += F.cross_entropy(out, yb, reduction="sum").item()
                correct += (out.argmax(1) == yb).sum().item()
            n += xb.shape[0]
    print("%.6f %.6f" % (total / n, correct / n))


if __name__ == "__main__":
    main()
