#!/usr/bin/python3
"""PyTorch baseline benchmark: the STEM model of a config.json trained in plain
PyTorch 1.13 on the CPU, float32, tuned to be as fast as PyTorch allows.

What it does: builds the model of the config (the math of model-format.md, the
same as scripts/reference.py) as an nn.Module with random weights (normal, std
0.02; norms 1), draws seeded random token batches, and times whole training
steps -- forward, loss, backward, torch.optim.AdamW(lr=1e-4, betas=(0.9, 0.95),
weight_decay=0.1) over every parameter (STEM tables included, with the dense
gradients plain PyTorch gives them), zero_grad(set_to_none=True) -- or, with
--mode forward, the forward and loss under torch.no_grad(). After --warmup
untimed steps it reports the median of --steps: tokens/s (B*T per step, as
`stem bench` counts them), step seconds and a forward/backward/optimizer split.

Speed choices (each is the faster of what was tried, see --help for switches):
fused QKV and fused gate|up weights (one GEMM each; AdamW is elementwise, so
this is the same optimisation problem), RoPE as x*cos + roll(x)*signed_sin with
cached tables, causal attention as baddbmm with a cached additive mask then
softmax and bmm, STEM rows via F.embedding, the lm_head and loss only on the
B*(T-1) positions that have a target, hash-MoE by sorting positions per expert
(one GEMM set per expert, no Python loop over tokens), AdamW foreach=False.

Run it with the Debian interpreter that has torch; for the best numbers use the
environment that scripts/bench_compare.sh sets up (OMP_NUM_THREADS=2, OpenMP
OpenBLAS, tcmalloc):
    /usr/bin/python3 scripts/bench_pytorch.py --config configs/S-stem.json \
        --batch 8 --seq 256 [--steps 5 --warmup 1] [--mode train|forward] [--json]
Sanity / correctness:
    --fixed-batch      reuse one batch every step (the loss should fall)
    --check-reference  compare loss, logits and gradients with scripts/reference.py
"""

import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402


# ----------------------------------------------------------------------------
# Model

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class Rope:
    """Cached RoPE tables: cos [T, hd] and sin with the sign of rotate_half
    folded in, so rope(x) = x * cos + roll(x, hd/2) * signed_sin."""

    def __init__(self, hd, theta):
        self.hd, self.theta, self.cache = hd, theta, {}

    def tables(self, T, dtype):
        key = (T, dtype)
        if key not in self.cache:
            cos, sin = ref.rope_cos_sin(T, self.hd, self.theta, dtype)
            h = self.hd // 2
            signed = torch.cat([-sin[:, :h], sin[:, h:]], dim=-1)
            self.cache[key] = (cos.contiguous(), signed.contiguous())
        return self.cache[key]


def apply_rope(x, cos, signed_sin):
    """x [..., T, hd]; the HF rotate_half convention."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


_MASKS = {}


def causal_mask(T, dtype):
    """Additive [T, T] mask, 0 on and below the diagonal, -inf above (cached)."""
    key = (T, dtype)
    if key not in _MASKS:
        _MASKS[key] = torch.full((T, T), float("-inf"), dtype=dtype).triu(1)
    return _MASKS[key]


def param(*shape, std=0.02, gen=None):
    return nn.Parameter(torch.empty(*shape).normal_(0.0, std, generator=gen))


class Layer(nn.Module):
    def __init__(self, cfg, kind, fuse, gen):
        super().__init__()
        V, d, f = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
        H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        hd = d // H
        self.kind, self.fuse, self.H, self.Hkv, self.hd = kind, fuse, H, Hkv, hd
        self.eps = cfg["rms_norm_eps"]
        self.input_layernorm = nn.Parameter(torch.ones(d))
        self.post_attention_layernorm = nn.Parameter(torch.ones(d))
        if fuse:
            self.qkv_proj = param((H + 2 * Hkv) * hd, d, gen=gen)   # rows: q | k | v
        else:
            self.q_proj = param(H * hd, d, gen=gen)
            self.k_proj = param(Hkv * hd, d, gen=gen)
            self.v_proj = param(Hkv * hd, d, gen=gen)
        self.o_proj = param(d, H * hd, gen=gen)
        if kind == "dense":
            if fuse:
                self.gate_up_proj = param(2 * f, d, gen=gen)           # rows: gate | up
            else:
                self.gate_proj = param(f, d, gen=gen)
                self.up_proj = param(f, d, gen=gen)
            self.down_proj = param(d, f, gen=gen)
        elif kind == "stem":
            self.gate_proj = param(f, d, gen=gen)
            self.stem_embedding = param(V, f, gen=gen)
            self.down_proj = param(d, f, gen=gen)
        elif kind == "hash_moe":
            E = cfg["num_hash_experts"]
            self.register_buffer("hash_table", torch.randint(0, E, (V,), generator=gen))
            self.experts_gate_up = nn.ParameterList(
                [param(2 * f, d, gen=gen) for _ in range(E)]) if fuse else None
            if not fuse:
                self.experts_gate = nn.ParameterList([param(f, d, gen=gen) for _ in range(E)])
                self.experts_up = nn.ParameterList([param(f, d, gen=gen) for _ in range(E)])
            self.experts_down = nn.ParameterList([param(d, f, gen=gen) for _ in range(E)])
        else:
            raise ValueError(f"unknown ffn type {kind}")

    # --- attention ---------------------------------------------------------
    def attention(self, a, rope_tabs, mask):
        B, T, _ = a.shape
        H, Hkv, hd = self.H, self.Hkv, self.hd
        cos, ssin = rope_tabs
        if self.fuse:
            qkv = F.linear(a, self.qkv_proj).view(B, T, H + 2 * Hkv, hd).transpose(1, 2)
            qk = apply_rope(qkv[:, :H + Hkv], cos, ssin)          # [B, H+Hkv, T, hd]
            q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + Hkv:]
        else:
            q = F.linear(a, self.q_proj).view(B, T, H, hd).transpose(1, 2)
            k = F.linear(a, self.k_proj).view(B, T, Hkv, hd).transpose(1, 2)
            v = F.linear(a, self.v_proj).view(B, T, Hkv, hd).transpose(1, 2)
            q, k = apply_rope(q, cos, ssin), apply_rope(k, cos, ssin)
        if Hkv != H:
            # [B, Hkv, T, hd] -> [B, Hkv, H/Hkv, T, hd] (a view) -> [B, H, T, hd]
            k = k[:, :, None].expand(B, Hkv, H // Hkv, T, hd).reshape(B, H, T, hd)
            v = v[:, :, None].expand(B, Hkv, H // Hkv, T, hd).reshape(B, H, T, hd)
        q = q.reshape(B * H, T, hd)
        k = k.reshape(B * H, T, hd)
        v = v.reshape(B * H, T, hd)
        scores = torch.baddbmm(mask, q, k.transpose(1, 2), beta=1.0, alpha=1.0 / math.sqrt(hd))
        o = torch.bmm(torch.softmax(scores, dim=-1), v)           # [B*H, T, hd]
        o = o.view(B, H, T, hd).transpose(1, 2).reshape(B, T, H * hd)
        return F.linear(o, self.o_proj)

    # --- feed-forward ------------------------------------------------------
    def swiglu(self, x, gate_up=None, gate=None, up=None, down=None):
        if gate_up is not None:
            g, u = F.linear(x, gate_up).chunk(2, dim=-1)
        else:
            g, u = F.linear(x, gate), F.linear(x, up)
        return F.linear(F.silu(g) * u, down)

    def ffn(self, x, tokens):
        if self.kind == "dense":
            if self.fuse:
                return self.swiglu(x, gate_up=self.gate_up_proj, down=self.down_proj)
            return self.swiglu(x, gate=self.gate_proj, up=self.up_proj, down=self.down_proj)
        if self.kind == "stem":
            rows = F.embedding(tokens, self.stem_embedding)       # [B, T, f]
            return F.linear(F.silu(F.linear(x, self.gate_proj)) * rows, self.down_proj)
        # hash_moe: sort positions by expert, one contiguous GEMM set per expert
        B, T, d = x.shape
        xf = x.reshape(B * T, d)
        route = self.hash_table[tokens.reshape(-1)]
        order = torch.argsort(route)
        counts = torch.bincount(route, minlength=len(self.experts_down)).tolist()
        xs = xf.index_select(0, order)
        outs, start = [], 0
        for e, n in enumerate(counts):
            if n:
                xe = xs[start:start + n]
                if self.fuse:
                    outs.append(self.swiglu(xe, gate_up=self.experts_gate_up[e],
                                            down=self.experts_down[e]))
                else:
                    outs.append(self.swiglu(xe, gate=self.experts_gate[e], up=self.experts_up[e],
                                            down=self.experts_down[e]))
            start += n
        ys = torch.cat(outs, dim=0)
        y = torch.empty_like(ys).index_copy(0, order, ys)
        return y.view(B, T, d)

    def forward(self, h, tokens, rope_tabs, mask):
        h = h + self.attention(rms_norm(h, self.input_layernorm, self.eps), rope_tabs, mask)
        return h + self.ffn(rms_norm(h, self.post_attention_layernorm, self.eps), tokens)


class StemLM(nn.Module):
    def __init__(self, cfg, fuse=True, seed=0):
        super().__init__()
        ref.check_config(cfg)
        gen = torch.Generator().manual_seed(seed)
        V, d = cfg["vocab_size"], cfg["hidden_size"]
        self.cfg = cfg
        self.embed_tokens = param(V, d, gen=gen)
        self.layers = nn.ModuleList([Layer(cfg, k, fuse, gen) for k in cfg["ffn_types"]])
        self.norm = nn.Parameter(torch.ones(d))
        self.lm_head = None if cfg["tie_word_embeddings"] else param(V, d, gen=gen)
        self.rope = Rope(d // cfg["num_attention_heads"], cfg["rope_theta"])

    def hidden(self, tokens):
        T = tokens.shape[1]
        if T > self.cfg["max_position_embeddings"]:
            raise ValueError(f"sequence length {T} > max_position_embeddings")
        dtype = self.embed_tokens.dtype
        rope_tabs, mask = self.rope.tables(T, dtype), causal_mask(T, dtype)
        h = F.embedding(tokens, self.embed_tokens)
        for layer in self.layers:
            h = layer(h, tokens, rope_tabs, mask)
        return rms_norm(h, self.norm, self.cfg["rms_norm_eps"])

    def head(self):
        return self.embed_tokens if self.lm_head is None else self.lm_head

    def forward(self, tokens):
        """Mean next-token cross-entropy over the B*(T-1) positions; the head
        GEMM runs only on the positions that have a target."""
        h = self.hidden(tokens)
        d = h.shape[-1]
        logits = F.linear(h[:, :-1].reshape(-1, d), self.head())
        return F.cross_entropy(logits, tokens[:, 1:].reshape(-1))

    def logits(self, tokens):
        return F.linear(self.hidden(tokens), self.head())

    def contract_tensors(self):
        """name -> tensor in the contract's layout (fused weights split), for
        scripts/reference.py. Views of the parameters, so autograd flows."""
        cfg = self.cfg
        f = cfg["intermediate_size"]
        out = {"model.embed_tokens.weight": self.embed_tokens}
        for i, L in enumerate(self.layers):
            p = f"model.layers.{i}."
            out[p + "input_layernorm.weight"] = L.input_layernorm
            out[p + "post_attention_layernorm.weight"] = L.post_attention_layernorm
            if L.fuse:
                nq, nk = L.H * L.hd, L.Hkv * L.hd
                q, k, v = L.qkv_proj.split([nq, nk, nk], dim=0)
            else:
                q, k, v = L.q_proj, L.k_proj, L.v_proj
            out[p + "self_attn.q_proj.weight"] = q
            out[p + "self_attn.k_proj.weight"] = k
            out[p + "self_attn.v_proj.weight"] = v
            out[p + "self_attn.o_proj.weight"] = L.o_proj
            if L.kind == "dense":
                g, u = L.gate_up_proj.split([f, f]) if L.fuse else (L.gate_proj, L.up_proj)
                out[p + "mlp.gate_proj.weight"] = g
                out[p + "mlp.up_proj.weight"] = u
                out[p + "mlp.down_proj.weight"] = L.down_proj
            elif L.kind == "stem":
                out[p + "mlp.gate_proj.weight"] = L.gate_proj
                out[p + "mlp.stem_embedding.weight"] = L.stem_embedding
                out[p + "mlp.down_proj.weight"] = L.down_proj
            else:
                out[p + "mlp.hash_table"] = L.hash_table
                for e in range(len(L.experts_down)):
                    q_ = f"{p}mlp.experts.{e}."
                    if L.fuse:
                        g, u = L.experts_gate_up[e].split([f, f])
                    else:
                        g, u = L.experts_gate[e], L.experts_up[e]
                    out[q_ + "gate_proj.weight"] = g
                    out[q_ + "up_proj.weight"] = u
                    out[q_ + "down_proj.weight"] = L.experts_down[e]
        out["model.norm.weight"] = self.norm
        if self.lm_head is not None:
            out["lm_head.weight"] = self.lm_head
        return out


def train_flops_per_token(cfg, T):
    """The engine's accounting (src/model/accounting.cpp): 3 x (2 x weights
    multiplied per token + causal attention at mean context (T+1)/2)."""
    V, d, f, L = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // H
    attn_w = (2 * H * hd + 2 * Hkv * hd) * d
    fwd = 0.0
    for kind in cfg["ffn_types"]:
        fwd += 2.0 * (attn_w + (2 if kind == "stem" else 3) * f * d)
    fwd += 2.0 * V * d
    attn = 4.0 * (T + 1) / 2.0 * H * hd * L
    return 3.0 * (fwd + attn)


# ----------------------------------------------------------------------------
# Environment report: which BLAS / malloc the process really mapped.

def loaded_libraries():
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/"):
                    libs.add(parts[5])
    except OSError:
        pass
    keys = ("blas", "lapack", "tcmalloc", "jemalloc", "gomp", "iomp", "dnnl", "mkl")
    return sorted(p for p in libs if any(k in os.path.basename(p) for k in keys))


def openblas_info(libs):
    """Core type, thread count and build config of the OpenBLAS mapped in this
    process (ctypes on the already-loaded library returns the same handle)."""
    for p in libs:
        if "openblas" in os.path.basename(p):
            try:
                lib = ctypes.CDLL(p, mode=ctypes.RTLD_NOLOAD | ctypes.RTLD_GLOBAL) \
                    if hasattr(ctypes, "RTLD_NOLOAD") else ctypes.CDLL(p)
            except OSError:
                try:
                    lib = ctypes.CDLL(p)
                except OSError:
                    continue
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            parallel = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(
                lib.openblas_get_parallel(), "?")
            return {"path": p, "core": lib.openblas_get_corename().decode(),
                    "threads": lib.openblas_get_num_threads(), "parallel": parallel,
                    "config": lib.openblas_get_config().decode().strip()}
    return None


# ----------------------------------------------------------------------------
# Benchmark

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="model config.json")
    ap.add_argument("--batch", "-b", type=int, default=4)
    ap.add_argument("--seq", "-t", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=["train", "forward"], default="train")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--foreach", choices=["on", "off"], default="off",
                    help="AdamW foreach implementation (default off: the faster here; on the CPU "
                         "torch 1.13's foreach ops are a per-tensor loop per stage, worse locality)")
    ap.add_argument("--no-fuse", action="store_true",
                    help="separate q/k/v and gate/up weights (one GEMM each)")
    ap.add_argument("--fixed-batch", action="store_true", help="reuse one batch every step")
    ap.add_argument("--check-reference", action="store_true",
                    help="compare loss, logits and gradients with scripts/reference.py, then exit")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.seq < 2 or args.steps < 1 or args.warmup < 0:
        ap.error("need --batch >= 1, --seq >= 2, --steps >= 1, --warmup >= 0")

    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        cfg = json.load(f)
    model = StemLM(cfg, fuse=not args.no_fuse, seed=args.seed)
    V = cfg["vocab_size"]
    gen = torch.Generator().manual_seed(args.seed + 1)

    def batch():
        return torch.randint(0, V, (args.batch, args.seq), generator=gen)

    if args.check_reference:
        return check_reference(model, cfg, batch())

    opt = None
    if args.mode == "train":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                                weight_decay=0.1, foreach=args.foreach == "on")
    n = args.warmup + args.steps
    batches = [batch()] * n if args.fixed_batch else [batch() for _ in range(n)]
    t_step, t_fwd, t_bwd, t_opt, losses = [], [], [], [], []
    for s in range(n):
        tokens = batches[s]
        t0 = time.perf_counter()
        if opt is None:
            with torch.no_grad():
                loss = model(tokens)
            t1 = t2 = t3 = time.perf_counter()
        else:
            loss = model(tokens)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
        losses.append(loss.item())
        if s >= args.warmup:
            t_step.append(t3 - t0)
            t_fwd.append(t1 - t0)
            t_bwd.append(t2 - t1)
            t_opt.append(t3 - t2)
        if not args.json:
            print(f"  step {s + 1}/{n}{' (warm-up)' if s < args.warmup else ''}: "
                  f"{t3 - t0:.3f} s  loss {losses[-1]:.4f}", file=sys.stderr)

    step = statistics.median(t_step)
    tps = args.batch * args.seq / step
    flops_tok = train_flops_per_token(cfg, args.seq) / (1.0 if opt else 3.0)
    libs = loaded_libraries()
    ob = openblas_info(libs)
    nparams = sum(p.numel() for p in model.parameters())
    result = {
        "engine": "pytorch", "torch_version": torch.__version__, "mode": args.mode,
        "config": args.config, "batch": args.batch, "seq": args.seq,
        "tokens_per_second": tps, "step_seconds": step,
        "forward_seconds": statistics.median(t_fwd), "backward_seconds": statistics.median(t_bwd),
        "optimizer_seconds": statistics.median(t_opt), "step_seconds_all": t_step,
        "flops_per_token": flops_tok, "gflops": flops_tok * tps / 1e9,
        "loss": losses[-1], "losses": losses, "ln_vocab": math.log(V),
        "threads": torch.get_num_threads(), "foreach": args.foreach == "on",
        "fused_weights": not args.no_fuse, "fixed_batch": args.fixed_batch, "params": nparams,
        "openblas": ob, "libraries": libs,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "LD_LIBRARY_PATH", "LD_PRELOAD",
                                               "OPENBLAS_CORETYPE")},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"pytorch {torch.__version__} {args.mode}  {args.config}  B={args.batch} T={args.seq}  "
              f"{nparams} params  {torch.get_num_threads()} threads")
        print(f"  tokens/s        {tps:.1f}")
        print(f"  step            {step:.3f} s (median of {args.steps})", end="")
        if opt:
            print(f"  forward {result['forward_seconds']:.3f}  backward {result['backward_seconds']:.3f}"
                  f"  optimizer {result['optimizer_seconds']:.3f}", end="")
        print(f"\n  model FLOP/s    {result['gflops']:.1f} G ({flops_tok / 1e6:.1f} MFLOP/token)")
        print(f"  loss            {' '.join(f'{x:.4f}' for x in losses)}  (ln V = {math.log(V):.4f})")
        if ob:
            print(f"  OpenBLAS        {ob['path']} ({ob['parallel']}, core {ob['core']}, "
                  f"{ob['threads']} threads)")
        print(f"  libraries       {' '.join(libs)}")
    return 0


def check_reference(model, cfg, tokens):
    """The fast model against scripts/reference.py on the same weights: loss,
    logits and every parameter's gradient, in float32."""
    loss = model(tokens)
    loss.backward()
    fast_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        fast_logits = model.logits(tokens)
    logits, ref_loss = ref.forward(cfg, model.contract_tensors(), tokens)
    ref_loss.backward()
    ref_grads = {n: p.grad for n, p in model.named_parameters()}
    dl = (logits.detach() - fast_logits).abs().max().item() / logits.detach().abs().max().item()
    worst = max((fast_grads[n] - ref_grads[n]).abs().max().item()
                / max(ref_grads[n].abs().max().item(), 1e-30) for n in fast_grads)
    ok = abs(loss.item() - ref_loss.item()) < 1e-4 and dl < 1e-4 and worst < 1e-3
    print(f"loss fast {loss.item():.6f} reference {ref_loss.item():.6f} (ln V {math.log(cfg['vocab_size']):.6f})")
    print(f"logits max rel diff {dl:.2e}; worst gradient max rel diff {worst:.2e} "
          f"over {len(fast_grads)} parameters -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
