#!/usr/bin/python3
"""A plain PyTorch reference of the STEM model contract (docs: model-format.md).

What it does: reads a stem checkpoint directory (config.json + model.safetensors)
with a tiny dependency-free safetensors reader, and computes the contract's
forward pass -- RMSNorm, RoPE (Hugging Face rotate_half convention, angles in
float64, cos/sin rounded to float32), causal grouped-query attention, dense
SwiGLU / STEM / hash-MoE feed-forward layers, final norm, lm_head or tied
embeddings -- and the mean next-token cross-entropy over all B*(T-1) positions.
It computes in float32 by default, or float64 (`--double`), and is autograd
friendly: scripts/make_fixtures.py differentiates it to write test fixtures.
With a document mask (`--doc-mask BOS,EOS`, forward(doc_mask=...)) each
sequence is split into the documents its tokens delimit -- one starts at
position 0, at every BOS and after every EOS (a negative id turns its rule
off) -- attention stays inside a document and RoPE positions restart at 0 in
each, so every position sees what it would see with its document alone; the
loss still counts all B*(T-1) positions. This is a training option of the
engine, not part of the checkpoint contract.

What it does not do: tokenization, training, sampling, speed. It is written to
be read next to the contract, one function per formula, not to be fast.

Usage (run with the Debian interpreter that has torch):
    /usr/bin/python3 scripts/reference.py logits --model DIR --tokens-file F \
        [--out logits.npy] [--compare engine_logits.npy] [--double] [--doc-mask BOS,EOS]
The tokens file holds whitespace-separated ids, one sequence per line, all
lines of the same length T (B lines). Logits are written as [B*T, V] float32.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header
# {name: {dtype, shape, data_offsets: [begin, end)}} with offsets relative to
# the data section, optional "__metadata__" (str -> str), then the raw data.

_NP_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I32": np.dtype("<i4"),
              "I64": np.dtype("<i8"), "BF16": np.dtype("<u2")}


def read_safetensors(path):
    """Returns (tensors: name -> np.ndarray, metadata: dict). BF16 is widened to
    float32 (exactly: a bf16 value is the high half of a float32)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: file too short for a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} past the end of the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        dtype = info["dtype"]
        if dtype not in _NP_DTYPES:
            raise ValueError(f"{path}: tensor '{name}': unsupported dtype {dtype}")
        shape = [int(s) for s in info["shape"]]
        begin, end = info["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * _NP_DTYPES[dtype].itemsize or end > len(data) or begin < 0:
            raise ValueError(f"{path}: tensor '{name}': bad data_offsets [{begin}, {end}] "
                             f"for {dtype} {shape}")
        arr = np.frombuffer(data[begin:end], dtype=_NP_DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = arr.copy()
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes `tensors` (name -> np.ndarray of float32, float64 or int32) in the
    given order, contiguously with no holes. The header is padded with spaces to
    a multiple of 8 bytes, as the reference implementation does."""
    names = {np.dtype("float32"): "F32", np.dtype("float64"): "F64",
             np.dtype("int32"): "I32", np.dtype("int64"): "I64"}
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Checkpoint

CONFIG_KEYS = ["model_type", "vocab_size", "hidden_size", "intermediate_size",
               "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "max_position_embeddings", "rope_theta", "rms_norm_eps",
               "tie_word_embeddings", "ffn_types", "num_hash_experts"]
FFN_TYPES = ("dense", "stem", "hash_moe")


def check_config(cfg):
    """Raises ValueError unless `cfg` satisfies every rule of the contract."""
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"config.json: missing keys {missing}")
    d, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    if d % H or H % Hkv:
        raise ValueError(f"config.json: hidden_size {d}, heads {H}, kv heads {Hkv} do not divide")
    if (d // H) % 2:
        raise ValueError(f"config.json: head_dim {d // H} must be even for RoPE")
    if len(cfg["ffn_types"]) != cfg["num_hidden_layers"]:
        raise ValueError("config.json: ffn_types length differs from num_hidden_layers")
    bad = [t for t in cfg["ffn_types"] if t not in FFN_TYPES]
    if bad:
        raise ValueError(f"config.json: unknown ffn_types {bad}")
    if "hash_moe" in cfg["ffn_types"] and cfg["num_hash_experts"] < 1:
        raise ValueError("config.json: hash_moe layers need num_hash_experts >= 1")


def param_shapes(cfg):
    """Every tensor of the contract in order: name -> (shape, dtype string)."""
    V, d, f = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // H
    out = {"model.embed_tokens.weight": ([V, d], "F32")}
    for i, kind in enumerate(cfg["ffn_types"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ([d], "F32")
        out[p + "self_attn.q_proj.weight"] = ([H * hd, d], "F32")
        out[p + "self_attn.k_proj.weight"] = ([Hkv * hd, d], "F32")
        out[p + "self_attn.v_proj.weight"] = ([Hkv * hd, d], "F32")
        out[p + "self_attn.o_proj.weight"] = ([d, H * hd], "F32")
        out[p + "post_attention_layernorm.weight"] = ([d], "F32")
        if kind == "dense":
            out[p + "mlp.gate_proj.weight"] = ([f, d], "F32")
            out[p + "mlp.up_proj.weight"] = ([f, d], "F32")
            out[p + "mlp.down_proj.weight"] = ([d, f], "F32")
        elif kind == "stem":
            out[p + "mlp.gate_proj.weight"] = ([f, d], "F32")
            out[p + "mlp.stem_embedding.weight"] = ([V, f], "F32")
            out[p + "mlp.down_proj.weight"] = ([d, f], "F32")
        else:
            out[p + "mlp.hash_table"] = ([V], "I32")
            for e in range(cfg["num_hash_experts"]):
                q = f"{p}mlp.experts.{e}."
                out[q + "gate_proj.weight"] = ([f, d], "F32")
                out[q + "up_proj.weight"] = ([f, d], "F32")
                out[q + "down_proj.weight"] = ([d, f], "F32")
    out["model.norm.weight"] = ([d], "F32")
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = ([V, d], "F32")
    return out


def load_checkpoint(model_dir, dtype=torch.float32):
    """Returns (config dict, name -> torch.Tensor). Float tensors are cast to
    `dtype`; hash tables stay int64 (for indexing). Checks names and shapes."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    check_config(cfg)
    arrays, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    expected = param_shapes(cfg)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(f"{model_dir}: tensors missing {missing}, unexpected {extra}")
    tensors = {}
    for name, (shape, _) in expected.items():
        a = arrays[name]
        if list(a.shape) != shape:
            raise ValueError(f"{model_dir}: tensor '{name}' has shape {list(a.shape)}, want {shape}")
        if name.endswith("hash_table"):
            tensors[name] = torch.from_numpy(a.astype(np.int64))
        else:
            tensors[name] = torch.from_numpy(a.astype(np.float32)).to(dtype)
    return cfg, tensors


# ----------------------------------------------------------------------------
# The forward pass, one function per formula of the contract.

def rms_norm(x, w, eps):
    """rms(x, w) = x / sqrt(mean(x^2) + eps) * w, over the last axis."""
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def rope_cos_sin(T, hd, theta, dtype):
    """cos and sin tables [T, hd]: angles p * theta^(-2j/hd) in float64, cos
    and sin rounded to float32 (as the engine stores them), repeated twice."""
    j = torch.arange(hd // 2, dtype=torch.float64)
    inv_freq = theta ** (-2.0 * j / hd)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angle = torch.cat([angle, angle], dim=-1)
    return (torch.cos(angle).to(torch.float32).to(dtype),
            torch.sin(angle).to(torch.float32).to(dtype))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    """x [B, heads, T, hd]; cos, sin [T, hd], or [B, 1, T, hd] (a position per
    row of each sequence)."""
    return x * cos + rotate_half(x) * sin


def doc_starts(tokens, bos, eos):
    """[B, T] int64: the first position of the document that holds each
    position. 0 at t = 0; for t > 0, t where tokens[t] == bos or
    tokens[t-1] == eos, else that of t-1. A negative id turns its rule off."""
    B, T = tokens.shape
    starts = torch.zeros(B, T, dtype=torch.int64)
    for t in range(1, T):
        new = torch.zeros(B, dtype=torch.bool)
        if bos >= 0:
            new |= tokens[:, t] == bos
        if eos >= 0:
            new |= tokens[:, t - 1] == eos
        starts[:, t] = torch.where(new, torch.full((B,), t, dtype=torch.int64), starts[:, t - 1])
    return starts


def attention(a, w_q, w_k, w_v, w_o, H, Hkv, cos, sin, blocked=None):
    """Causal grouped-query attention of a [B, T, d]; query head j reads kv head
    j // (H / Hkv). `blocked` [B, 1, T, T] (True: query i may not read key j)
    replaces the causal mask, for document masking."""
    B, T, d = a.shape
    hd = d // H
    q = (a @ w_q.T).view(B, T, H, hd).transpose(1, 2)    # [B, H, T, hd]
    k = (a @ w_k.T).view(B, T, Hkv, hd).transpose(1, 2)  # [B, Hkv, T, hd]
    v = (a @ w_v.T).view(B, T, Hkv, hd).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k = k.repeat_interleave(H // Hkv, dim=1)              # [B, H, T, hd]
    v = v.repeat_interleave(H // Hkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)      # [B, H, T, T]
    if blocked is None:
        blocked = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(blocked, float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v                 # [B, H, T, hd]
    return o.transpose(1, 2).reshape(B, T, H * hd) @ w_o.T


def swiglu(x, w_gate, w_up, w_down):
    """Dense FFN: down(silu(gate(x)) * up(x))."""
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def stem_ffn(x, tokens, w_gate, stem_embedding, w_down):
    """STEM FFN: down(silu(gate(x)) * stem_embedding[t]), the row of the token
    at each position replacing the up projection."""
    return (F.silu(x @ w_gate.T) * stem_embedding[tokens]) @ w_down.T


def hash_moe_ffn(x, tokens, hash_table, experts):
    """Hash-MoE FFN: each position goes to expert hash_table[t], a dense SwiGLU.
    `experts` is a list of (gate, up, down) weights."""
    route = hash_table[tokens]                            # [B, T]
    y = torch.zeros_like(x)
    for e, (w_gate, w_up, w_down) in enumerate(experts):
        mask = route == e
        if mask.any():
            y[mask] = swiglu(x[mask], w_gate, w_up, w_down)
    return y


def forward(cfg, tensors, tokens, doc_mask=None):
    """tokens: int tensor [B, T]. Returns (logits [B, T, V], loss scalar): the
    loss is the mean cross-entropy of logits[:, p] against tokens[:, p+1] over
    all B*(T-1) positions. Computes in the dtype of the embedding table.
    doc_mask (bos, eos): attention within documents only, and RoPE positions
    t - doc_starts(tokens, bos, eos)[t]; None: the whole sequence is one."""
    tokens = torch.as_tensor(tokens, dtype=torch.int64)
    B, T = tokens.shape
    V, d = cfg["vocab_size"], cfg["hidden_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    eps = cfg["rms_norm_eps"]
    if T > cfg["max_position_embeddings"]:
        raise ValueError(f"sequence length {T} > max_position_embeddings "
                         f"{cfg['max_position_embeddings']}")
    if T < 2:
        raise ValueError("need at least 2 tokens per sequence for a next-token loss")
    if tokens.min() < 0 or tokens.max() >= V:
        raise ValueError(f"token ids must lie in [0, {V})")
    embed = tensors["model.embed_tokens.weight"]
    cos, sin = rope_cos_sin(T, d // H, cfg["rope_theta"], embed.dtype)
    blocked = None
    if doc_mask is not None:
        starts = doc_starts(tokens, *doc_mask)                     # [B, T]
        pos = torch.arange(T)[None, :] - starts                    # [B, T]
        cos, sin = cos[pos][:, None], sin[pos][:, None]            # [B, 1, T, hd]
        j = torch.arange(T)
        blocked = (j[None, None, :] > j[None, :, None]) | (j[None, None, :] < starts[:, :, None])
        blocked = blocked[:, None]                                 # [B, 1, T, T]

    h = embed[tokens]                                     # [B, T, d]
    for i, kind in enumerate(cfg["ffn_types"]):
        p = f"model.layers.{i}."
        a = rms_norm(h, tensors[p + "input_layernorm.weight"], eps)
        h = h + attention(a, tensors[p + "self_attn.q_proj.weight"],
                          tensors[p + "self_attn.k_proj.weight"],
                          tensors[p + "self_attn.v_proj.weight"],
                          tensors[p + "self_attn.o_proj.weight"], H, Hkv, cos, sin, blocked)
        x = rms_norm(h, tensors[p + "post_attention_layernorm.weight"], eps)
        if kind == "dense":
            y = swiglu(x, tensors[p + "mlp.gate_proj.weight"], tensors[p + "mlp.up_proj.weight"],
                       tensors[p + "mlp.down_proj.weight"])
        elif kind == "stem":
            y = stem_ffn(x, tokens, tensors[p + "mlp.gate_proj.weight"],
                         tensors[p + "mlp.stem_embedding.weight"], tensors[p + "mlp.down_proj.weight"])
        else:
            experts = [tuple(tensors[f"{p}mlp.experts.{e}.{w}_proj.weight"]
                             for w in ("gate", "up", "down"))
                       for e in range(cfg["num_hash_experts"])]
            y = hash_moe_ffn(x, tokens, tensors[p + "mlp.hash_table"], experts)
        h = h + y
    head = embed if cfg["tie_word_embeddings"] else tensors["lm_head.weight"]
    logits = rms_norm(h, tensors["model.norm.weight"], eps) @ head.T  # [B, T, V]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    return logits, loss


# ----------------------------------------------------------------------------
# CLI

def read_tokens(path):
    """One sequence per line, whitespace-separated ids; returns int64 [B, T]."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append([int(w) for w in line.split()])
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: {e}") from None
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"{path}: need one or more lines of the same number of ids")
    return torch.tensor(rows, dtype=torch.int64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lg = sub.add_parser("logits", help="print the loss and write the logits of a token file")
    lg.add_argument("--model", required=True, help="checkpoint directory")
    lg.add_argument("--tokens-file", required=True, help="one sequence of ids per line")
    lg.add_argument("--out", help="write logits [B*T, V] float32 to this .npy")
    lg.add_argument("--compare", help=".npy of logits [B*T, V] (e.g. from the engine) to diff against")
    lg.add_argument("--double", action="store_true", help="compute in float64")
    lg.add_argument("--doc-mask", metavar="BOS,EOS",
                    help="attend within documents only, positions from 0 in each "
                         "(a negative id turns its rule off)")
    args = ap.parse_args(argv)
    doc_mask = None
    if args.doc_mask is not None:
        try:
            bos, eos = (int(x) for x in args.doc_mask.split(","))
        except ValueError:
            ap.error(f"--doc-mask: want BOS,EOS (two integers), got '{args.doc_mask}'")
        doc_mask = (bos, eos)

    dtype = torch.float64 if args.double else torch.float32
    cfg, tensors = load_checkpoint(args.model, dtype)
    tokens = read_tokens(args.tokens_file)
    with torch.no_grad():
        logits, loss = forward(cfg, tensors, tokens, doc_mask)
    B, T = tokens.shape
    flat = logits.reshape(B * T, -1).to(torch.float32).numpy()
    print(f"B={B} T={T} loss={loss.item():.9f}")
    if args.out:
        np.save(args.out, flat)
    if args.compare:
        other = np.load(args.compare).reshape(flat.shape)
        diff = float(np.abs(other.astype(np.float64) - flat).max())
        scale = float(np.abs(flat).max())
        print(f"max abs diff {diff:.3e} (relative to max |logit| {scale:.3e}: {diff / scale:.3e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
