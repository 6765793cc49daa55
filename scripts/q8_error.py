#!/usr/bin/env python3
"""The perplexity cost of 8-bit weights, measured before any 8-bit kernel:
copies a checkpoint with its weight matrices rounded to an 8-bit format and
written back as F32, so that `stem eval --compare` scores both on the same
windows.

Formats: matrices (q, k, v, o, gate, up, down, head) in blocks of 32 along
each row with one scale per block, absmax / 127, as llama.cpp's Q8_0 (a short
last block is padded with zeros); STEM tables with one such scale per row,
since a token reads one whole row. The embedding is a lookup and stays.

Usage: scripts/q8_error.py MODEL_DIR OUT_DIR [--what matrices|tables|all]
then:  stem eval --model MODEL_DIR --data DATA --compare OUT_DIR
Needs NumPy only; reads and writes F32 safetensors."""
import argparse
import json
import os
import shutil
import struct

import numpy as np


def q8_blocks(w, block=32):
    r, c = w.shape
    cp = (c + block - 1) // block * block
    b = np.zeros((r, cp), np.float32)
    b[:, :c] = w
    b = b.reshape(r, cp // block, block)
    s = np.abs(b).max(axis=2, keepdims=True) / 127.0
    s[s == 0] = 1
    return (np.clip(np.rint(b / s), -127, 127) * s).reshape(r, cp)[:, :c].astype(np.float32)


def q8_rows(w):
    s = np.abs(w).max(axis=1, keepdims=True) / 127.0
    s[s == 0] = 1
    return (np.clip(np.rint(w / s), -127, 127) * s).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--what", choices=["matrices", "tables", "all"], default="all")
    a = ap.parse_args()
    if os.path.exists(a.out):
        raise SystemExit(f"{a.out}: exists")
    shutil.copytree(a.model, a.out, ignore=shutil.ignore_patterns("optimizer.safetensors", "tables.stem"))
    path = os.path.join(a.out, "model.safetensors")
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header, base = json.loads(raw[8:8 + n]), 8 + n
    out = bytearray(raw)
    done = 0
    for name, e in header.items():
        if name == "__metadata__" or len(e["shape"]) != 2 or "embed_tokens" in name:
            continue
        if e["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {e['dtype']}; convert the model to F32 first")
        table = "stem_embedding" in name
        if (a.what == "matrices" and table) or (a.what == "tables" and not table):
            continue
        lo, hi = e["data_offsets"]
        w = np.frombuffer(raw, np.float32, (hi - lo) // 4, base + lo).reshape(e["shape"])
        out[base + lo:base + hi] = (q8_rows(w) if table else q8_blocks(w)).tobytes()
        done += 1
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(bytes(out))
    os.replace(tmp, path)
    print(f"{done} tensors rounded to 8 bits in {a.out}")


if __name__ == "__main__":
    main()
