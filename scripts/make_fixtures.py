#!/usr/bin/python3
"""Writes the whole-model test fixtures under tests/fixtures/<name>/, and checks
the PyTorch reference they come from (scripts/reference.py).

What it does: for each configuration below it samples, with a fixed seed, a
small random checkpoint in torch (not from the C++ engine), token sequences
that repeat ids, and random hash tables; runs the reference forward in float64
on the stored float32 weights; and writes
    config.json          every key of the contract
    model.safetensors    F32 weights, I32 hash tables
    tokens.txt           B lines of T whitespace-separated ids
    expected.safetensors logits [B*T, V], loss [1] (also in __metadata__ as a
                         full-precision string), grad.<name> for every trainable
                         tensor (not hash tables), all F32 cast from float64;
                         for a document-masked fixture (DOC_MASKS) also
                         bos_id and eos_id in __metadata__.
With --self-check it writes nothing and instead checks the reference: autograd
against central finite differences in float64, tied embeddings against untied
with lm_head = a copy of embed_tokens, the torch forward against a naive
per-position NumPy loop, the float32 forward against float64, the
document-masked forward against each document run alone, and (when they
exist) that the committed fixture files reproduce.

What it does not do: test the C++ engine (tests/test_model_fixtures.cpp does).

Usage: /usr/bin/python3 scripts/make_fixtures.py [--self-check] [--out DIR] [--only NAME]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures")


def make_config(V, d, L, H, Hkv, f, ffn_types, E=0, max_pos=64, theta=10000.0, eps=1e-5,
                tied=False):
    """A config.json dict with every key of the contract, in its order."""
    return {"model_type": "stem", "vocab_size": V, "hidden_size": d, "intermediate_size": f,
            "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": Hkv,
            "max_position_embeddings": max_pos, "rope_theta": float(theta), "rms_norm_eps": eps,
            "tie_word_embeddings": tied, "ffn_types": list(ffn_types), "num_hash_experts": E}


# name -> (seed, config, B, T). dense_mha has max_position_embeddings == T on
# purpose: a sequence exactly as long as the limit is allowed.
FIXTURES = {
    "mixed_gqa": (1001, make_config(61, 32, 4, 4, 2, 40, ["dense", "stem", "hash_moe", "stem"],
                                    E=3, max_pos=64), 2, 13),
    "stem_tied": (1002, make_config(50, 24, 3, 3, 1, 20, ["stem", "stem", "dense"], max_pos=32,
                                    theta=500.0, eps=1e-6, tied=True), 1, 17),
    "dense_mha": (1003, make_config(40, 16, 2, 2, 2, 24, ["dense", "dense"], max_pos=7), 3, 7),
    "moe_only": (1004, make_config(37, 16, 2, 4, 4, 12, ["hash_moe", "hash_moe"], E=4,
                                   max_pos=32), 2, 9),
    "doc_mask": (1005, make_config(29, 16, 3, 4, 2, 20, ["dense", "stem", "hash_moe"], E=3,
                                   max_pos=32), 2, 16),
}

# name -> (bos, eos, layout): fixtures run with document masking. The layout
# has one string per sequence: B for bos, E for eos, x for another id. Window
# 0 opens inside a document and holds three more; window 1 has a document of
# one BOS and one that starts after an EOS with no BOS.
DOC_MASKS = {
    "doc_mask": (1, 2, ["xxEBxxxEBxEBxxxx", "BxxEBBxxExxxxxxx"]),
}


def doc_mask_of(name):
    """(bos, eos) of a document-masked fixture, else None."""
    return DOC_MASKS[name][:2] if name in DOC_MASKS else None


# ----------------------------------------------------------------------------
# Sampling

def weight_std(name):
    """Standard deviations chosen so every layer's activations are O(1): the
    attention is far from uniform, the SwiGLU gates are not saturated, and the
    logits spread over a few nats."""
    if name.endswith("embed_tokens.weight"):
        return 0.5
    if name.endswith("stem_embedding.weight"):
        return 0.5
    if name.endswith(("q_proj.weight", "k_proj.weight")):
        return 0.3
    if name.endswith(("v_proj.weight", "gate_proj.weight", "up_proj.weight")):
        return 0.2
    if name.endswith(("o_proj.weight", "down_proj.weight")):
        return 0.15
    if name.endswith("lm_head.weight"):
        return 0.2
    raise KeyError(name)


def sample_tokens(V, B, T, gen):
    """[B, T] ids drawn from about half the vocabulary, so ids repeat within and
    across sequences, with the edge ids 0 and V-1 present and an explicit
    repeat at two positions that both feed the loss."""
    pool = torch.randperm(V, generator=gen)[: max(4, V // 2)]
    tokens = pool[torch.randint(len(pool), (B, T), generator=gen)]
    tokens[0, 1] = 0
    tokens[-1, T // 2] = V - 1
    tokens[0, T - 2] = tokens[0, 2]
    return tokens


def sample_doc_tokens(V, layout, bos, eos, gen):
    """[B, T] ids following a DOC_MASKS layout, the x positions drawn from the
    ids other than bos and eos."""
    others = torch.tensor([i for i in range(V) if i not in (bos, eos)])
    rows = []
    for line in layout:
        draw = others[torch.randint(len(others), (len(line),), generator=gen)].tolist()
        rows.append([bos if c == "B" else eos if c == "E" else draw[i] for i, c in enumerate(line)])
    return torch.tensor(rows, dtype=torch.int64)


def sample_hash_table(V, E, tokens, gen):
    """Random token -> expert map in [0, E), resampled until every expert gets
    at least one position that feeds the loss (p < T-1), so no expert's
    gradient is trivially zero."""
    used = tokens[:, :-1].reshape(-1)
    while True:
        table = torch.randint(E, (V,), generator=gen, dtype=torch.int64)
        if len(torch.unique(table[used])) == E:
            return table


def sample_fixture(name):
    """Returns (cfg, tensors name -> torch tensor, tokens [B, T]). Float weights
    are float32 values held in float64; hash tables are int64."""
    seed, cfg, B, T = FIXTURES[name]
    gen = torch.Generator().manual_seed(seed)
    V, E = cfg["vocab_size"], cfg["num_hash_experts"]
    if name in DOC_MASKS:
        bos, eos, layout = DOC_MASKS[name]
        tokens = sample_doc_tokens(V, layout, bos, eos, gen)
        assert tuple(tokens.shape) == (B, T)
    else:
        tokens = sample_tokens(V, B, T, gen)
    tensors = {}
    for pname, (shape, dtype) in ref.param_shapes(cfg).items():
        if dtype == "I32":
            tensors[pname] = sample_hash_table(V, E, tokens, gen)
        elif pname.endswith("norm.weight"):
            w = 1.0 + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float64)
            tensors[pname] = w.to(torch.float32).to(torch.float64)
        else:
            w = weight_std(pname) * torch.randn(shape, generator=gen, dtype=torch.float64)
            tensors[pname] = w.to(torch.float32).to(torch.float64)
    return cfg, tensors, tokens


def is_trainable(name):
    return not name.endswith("hash_table")


def loss_and_grads(cfg, tensors, tokens, doc_mask=None):
    """Float64 forward and backward: (logits [B, T, V], loss, name -> grad)."""
    leaves = {n: (t.clone().requires_grad_(True) if is_trainable(n) else t)
              for n, t in tensors.items()}
    logits, loss = ref.forward(cfg, leaves, tokens, doc_mask)
    loss.backward()
    grads = {n: t.grad for n, t in leaves.items() if is_trainable(n)}
    return logits.detach(), loss.detach(), grads


# ----------------------------------------------------------------------------
# Writing

def write_fixture(name, out_root):
    cfg, tensors, tokens = sample_fixture(name)
    B, T = tokens.shape
    logits, loss, grads = loss_and_grads(cfg, tensors, tokens, doc_mask_of(name))
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    weights = {n: (t.numpy().astype(np.int32) if not is_trainable(n)
                   else t.numpy().astype(np.float32)) for n, t in tensors.items()}
    ref.write_safetensors(os.path.join(d, "model.safetensors"), weights, {"format": "pt"})
    with open(os.path.join(d, "tokens.txt"), "w") as f:
        for row in tokens.tolist():
            f.write(" ".join(str(t) for t in row) + "\n")
    expected = {"logits": logits.reshape(B * T, -1).numpy().astype(np.float32),
                "loss": np.array([loss.item()], dtype=np.float32)}
    for n, g in grads.items():
        expected["grad." + n] = g.numpy().astype(np.float32)
    meta = {"loss": repr(loss.item()), "B": str(B), "T": str(T),
            "generator": "scripts/make_fixtures.py (float64 PyTorch reference)"}
    if doc_mask_of(name):
        meta["bos_id"], meta["eos_id"] = (str(i) for i in doc_mask_of(name))
    ref.write_safetensors(os.path.join(d, "expected.safetensors"), expected, meta)
    sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    print(f"{name}: B={B} T={T} loss={loss.item():.9f} files {sizes} "
          f"total {sum(sizes.values())} bytes")
    return sum(sizes.values())


# ----------------------------------------------------------------------------
# Self-check

def naive_forward(cfg, tensors, tokens, doc_mask=None):
    """The contract's forward written as plain per-position NumPy loops in
    float64, independent of reference.forward's batched tensor code; with
    doc_mask (bos, eos), position p reads positions s0..p of its document and
    is rotated as p - s0. Returns (logits [B, T, V], loss; nan when T == 1)."""
    W = {n: t.numpy().astype(np.float64) if is_trainable(n) else t.numpy() for n, t in tensors.items()}
    tokens = tokens.numpy()
    B, T = tokens.shape
    V, d, H, Hkv = (cfg[k] for k in ("vocab_size", "hidden_size", "num_attention_heads",
                                     "num_key_value_heads"))
    hd, eps, half = d // H, cfg["rms_norm_eps"], d // H // 2

    def rms(x, w):
        return x / math.sqrt(float(np.mean(x * x)) + eps) * w

    def silu(z):
        return z / (1.0 + np.exp(-z))

    def rope(x, p):
        out = np.empty(hd)
        for i in range(hd):
            ang = p * cfg["rope_theta"] ** (-2.0 * (i % half) / hd)
            c, s = float(np.float32(math.cos(ang))), float(np.float32(math.sin(ang)))
            rot = -x[i + half] if i < half else x[i - half]
            out[i] = x[i] * c + rot * s
        return out

    logits = np.zeros((B, T, V))
    nll = []
    for b in range(B):
        t = tokens[b]
        first = [0] * T  # the first position of each position's document
        for p in range(1, T):
            new = doc_mask is not None and ((doc_mask[0] >= 0 and t[p] == doc_mask[0]) or
                                            (doc_mask[1] >= 0 and t[p - 1] == doc_mask[1]))
            first[p] = p if new else first[p - 1]
        h = [W["model.embed_tokens.weight"][t[p]].copy() for p in range(T)]
        for li, kind in enumerate(cfg["ffn_types"]):
            pre = f"model.layers.{li}."
            a = [rms(h[p], W[pre + "input_layernorm.weight"]) for p in range(T)]
            q = [W[pre + "self_attn.q_proj.weight"] @ a[p] for p in range(T)]
            k = [W[pre + "self_attn.k_proj.weight"] @ a[p] for p in range(T)]
            v = [W[pre + "self_attn.v_proj.weight"] @ a[p] for p in range(T)]
            for p in range(T):
                o = np.zeros(H * hd)
                for j in range(H):
                    g = j // (H // Hkv)
                    s0 = first[p]
                    qj = rope(q[p][j * hd:(j + 1) * hd], p - s0)
                    sc = np.array([qj @ rope(k[s][g * hd:(g + 1) * hd], s - s0) / math.sqrt(hd)
                                   for s in range(s0, p + 1)])
                    pr = np.exp(sc - sc.max())
                    pr /= pr.sum()
                    o[j * hd:(j + 1) * hd] = sum(pr[s - s0] * v[s][g * hd:(g + 1) * hd]
                                                 for s in range(s0, p + 1))
                h[p] = h[p] + W[pre + "self_attn.o_proj.weight"] @ o
            for p in range(T):
                x = rms(h[p], W[pre + "post_attention_layernorm.weight"])
                m = pre + "mlp."
                if kind == "dense":
                    y = W[m + "down_proj.weight"] @ (silu(W[m + "gate_proj.weight"] @ x)
                                                     * (W[m + "up_proj.weight"] @ x))
                elif kind == "stem":
                    y = W[m + "down_proj.weight"] @ (silu(W[m + "gate_proj.weight"] @ x)
                                                     * W[m + "stem_embedding.weight"][t[p]])
                else:
                    e = f"{m}experts.{int(W[m + 'hash_table'][t[p]])}."
                    y = W[e + "down_proj.weight"] @ (silu(W[e + "gate_proj.weight"] @ x)
                                                     * (W[e + "up_proj.weight"] @ x))
                h[p] = h[p] + y
        head = W["model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"]
        for p in range(T):
            logits[b, p] = head @ rms(h[p], W["model.norm.weight"])
            if p < T - 1:
                z = logits[b, p]
                nll.append(z.max() + math.log(np.exp(z - z.max()).sum()) - z[t[p + 1]])
    return logits, float(np.mean(nll)) if nll else math.nan


def check_finite_differences(name, n_random=2, h=1e-6):
    """Autograd gradients against central differences in float64 on a few
    entries of every trainable tensor: the largest-gradient entry and
    `n_random` random ones. Returns the worst error relative to the tensor's
    largest gradient."""
    cfg, tensors, tokens = sample_fixture(name)
    mask = doc_mask_of(name)
    _, _, grads = loss_and_grads(cfg, tensors, tokens, mask)
    gen = torch.Generator().manual_seed(7)
    worst, count = 0.0, 0
    for pname, g in grads.items():
        flat_g = g.reshape(-1)
        picks = [int(flat_g.abs().argmax())]
        picks += torch.randint(flat_g.numel(), (n_random,), generator=gen).tolist()
        scale = max(float(flat_g.abs().max()), 1e-12)
        for idx in picks:
            w = tensors[pname].reshape(-1)  # a view: edits change tensors[pname]
            old = float(w[idx])
            w[idx] = old + h
            lp = ref.forward(cfg, tensors, tokens, mask)[1].item()
            w[idx] = old - h
            lm = ref.forward(cfg, tensors, tokens, mask)[1].item()
            w[idx] = old
            fd = (lp - lm) / (2 * h)
            worst = max(worst, abs(fd - float(flat_g[idx])) / scale)
            count += 1
    return worst, count


def check_tied_vs_untied(name="stem_tied"):
    """A tied model must equal the untied one whose lm_head is a copy of
    embed_tokens; its embedding gradient must be the sum of the two."""
    cfg, tensors, tokens = sample_fixture(name)
    assert cfg["tie_word_embeddings"]
    _, loss_t, g_t = loss_and_grads(cfg, tensors, tokens)
    cfg_u = dict(cfg, tie_word_embeddings=False)
    tensors_u = dict(tensors, **{"lm_head.weight": tensors["model.embed_tokens.weight"].clone()})
    _, loss_u, g_u = loss_and_grads(cfg_u, tensors_u, tokens)
    emb = "model.embed_tokens.weight"
    g_sum = g_u[emb] + g_u["lm_head.weight"]
    gdiff = float((g_t[emb] - g_sum).abs().max()) / float(g_sum.abs().max())
    others = max(float((g_t[n] - g_u[n]).abs().max()) for n in g_t if n != emb)
    return abs(loss_t.item() - loss_u.item()), gdiff, others


def check_naive(name):
    """Torch forward against the naive loops: (max logit diff relative to the
    max |logit|, absolute loss diff)."""
    cfg, tensors, tokens = sample_fixture(name)
    with torch.no_grad():
        logits, loss = ref.forward(cfg, tensors, tokens, doc_mask_of(name))
    nl, nloss = naive_forward(cfg, tensors, tokens, doc_mask_of(name))
    return (float(np.abs(logits.numpy() - nl).max() / np.abs(nl).max()),
            abs(loss.item() - nloss))


def check_float32(name):
    """Float32 forward and backward against float64: the headroom the C++
    tolerances have. Returns (logits diff / max |logit|, loss diff, worst
    gradient diff / max |grad| of its tensor)."""
    cfg, tensors, tokens = sample_fixture(name)
    mask = doc_mask_of(name)
    l64, loss64, g64 = loss_and_grads(cfg, tensors, tokens, mask)
    t32 = {n: (t.to(torch.float32) if is_trainable(n) else t) for n, t in tensors.items()}
    l32, loss32, g32 = loss_and_grads(cfg, t32, tokens, mask)
    gworst = max(float((g32[n].double() - g).abs().max() / g.abs().max()) for n, g in g64.items())
    return (float((l32.double() - l64).abs().max() / l64.abs().max()),
            abs(loss32.item() - loss64.item()), gworst)


def check_committed(name, root):
    """The fixture on disk loads through reference.load_checkpoint and gives the
    expected logits, loss and gradients (to float32 rounding); and its inputs
    equal a fresh regeneration, bit for bit."""
    d = os.path.join(root, name)
    if not os.path.isdir(d):
        return None
    cfg, tensors = ref.load_checkpoint(d, torch.float64)
    tokens = ref.read_tokens(os.path.join(d, "tokens.txt"))
    expected, meta = ref.read_safetensors(os.path.join(d, "expected.safetensors"))
    mask = doc_mask_of(name)
    logits, loss, grads = loss_and_grads(cfg, tensors, tokens, mask)
    B, T = tokens.shape

    # A float64 recomputation may differ from the one that wrote the fixture in
    # its last bits (reduction order of another BLAS or thread count): equal up
    # to one float32 ulp once rounded, and the loss to float64 round-off.
    def same32(a, b):
        a = a.numpy().astype(np.float32)
        return a.shape == b.shape and bool(np.all(np.abs(a - b) <= np.spacing(np.abs(b))))

    ok = same32(logits.reshape(B * T, -1), expected["logits"])
    ok &= abs(float(meta["loss"]) - loss.item()) <= 1e-13 * abs(loss.item())
    ok &= set(expected) == {"logits", "loss"} | {"grad." + n for n in grads}
    ok &= (meta.get("bos_id"), meta.get("eos_id")) == (
        tuple(str(i) for i in mask) if mask else (None, None))
    ok &= all(same32(g, expected["grad." + n]) for n, g in grads.items())
    cfg2, tensors2, tokens2 = sample_fixture(name)
    ok &= cfg2 == cfg and torch.equal(tokens2, tokens)
    ok &= all(torch.equal(tensors2[n], tensors[n]) for n in tensors)
    return bool(ok)


def check_documents_alone(name):
    """Each document of a masked fixture's windows gives, alone (naive loops,
    no mask), the logits the masked torch forward gives it in its window.
    Returns (max |logit diff| / max |logit|, number of documents)."""
    cfg, tensors, tokens = sample_fixture(name)
    with torch.no_grad():
        logits, _ = ref.forward(cfg, tensors, tokens, doc_mask_of(name))
    starts = ref.doc_starts(tokens, *doc_mask_of(name))
    B, T = tokens.shape
    worst, count = 0.0, 0
    for b in range(B):
        bounds = sorted(set(starts[b].tolist())) + [T]
        for s0, s1 in zip(bounds[:-1], bounds[1:]):
            alone, _ = naive_forward(cfg, tensors, tokens[b:b + 1, s0:s1])
            worst = max(worst, float(np.abs(logits[b, s0:s1].numpy() - alone[0]).max()))
            count += 1
    return worst / float(logits.abs().max()), count


def self_check(root):
    failures = []

    def verdict(ok, what):
        print(("  ok    " if ok else "  FAIL  ") + what)
        if not ok:
            failures.append(what)

    print("finite differences (float64, h=1e-6; error / max |grad| of the tensor):")
    for name in FIXTURES:
        worst, n = check_finite_differences(name)
        verdict(worst < 1e-6, f"{name}: {n} entries, worst {worst:.2e}")
    print("tied embeddings vs untied with lm_head = embed copy:")
    dl, dg, do = check_tied_vs_untied()
    verdict(dl < 1e-12 and dg < 1e-12 and do < 1e-12,
            f"loss diff {dl:.2e}, embed grad vs sum {dg:.2e}, other grads {do:.2e}")
    print("torch forward vs naive per-position NumPy loops (float64):")
    for name in FIXTURES:
        dlog, dloss = check_naive(name)
        verdict(dlog < 1e-12 and dloss < 1e-12, f"{name}: logits {dlog:.2e}, loss {dloss:.2e}")
    print("document-masked forward vs each document alone (naive loops, float64):")
    for name in DOC_MASKS:
        dlog, n = check_documents_alone(name)
        verdict(dlog < 1e-12, f"{name}: {n} documents, logits {dlog:.2e}")
    print("float32 vs float64 (headroom for the C++ tolerances 1e-4 / 1e-5 / 1e-3):")
    for name in FIXTURES:
        dlog, dloss, dgrad = check_float32(name)
        verdict(dlog < 1e-5 and dloss < 1e-6 and dgrad < 1e-4,
                f"{name}: logits {dlog:.2e}, loss {dloss:.2e}, grads {dgrad:.2e}")
    print(f"committed fixtures under {root}:")
    for name in FIXTURES:
        res = check_committed(name, root)
        if res is None:
            print(f"  skip  {name}: not written yet")
        else:
            verdict(res, f"{name}: loads, reproduces expected.safetensors, equals a regeneration")
    print("self-check: " + ("all passed" if not failures else f"{len(failures)} FAILED"))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self-check", action="store_true", help="check the reference; write nothing")
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture root (default tests/fixtures)")
    ap.add_argument("--only", choices=sorted(FIXTURES), action="append",
                    help="write only this fixture (repeatable; default all)")
    args = ap.parse_args()
    if args.self_check:
        return self_check(args.out)
    total = sum(write_fixture(name, args.out) for name in (args.only or FIXTURES))
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
