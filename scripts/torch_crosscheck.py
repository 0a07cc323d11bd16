#!/usr/bin/python3
"""torch_crosscheck.py: checks the C model against an independent PyTorch
implementation of the same architecture (nanoGPT's model.py, written here
from its description), in float64.

Usage: /usr/bin/python3 scripts/torch_crosscheck.py MODEL.safetensors DUMP.safetensors

MODEL is a nanogptq checkpoint; DUMP (from tests/crosscheck_dump) holds one
batch's logits, loss and every parameter gradient computed by the C code,
plus the losses of five AdamW steps (global-norm clipping at 1.0, the learning
rates used) and the parameters after them. The script loads MODEL into the
PyTorch model, recomputes everything and compares.

Tolerance: per tensor, the normwise relative error max|c - torch| / max|torch|
must be <= 1e-4 for logits, loss, gradients and step losses (the C side runs in
float32, whose rounding over a few layers stays near 1e-6; 1e-4 leaves room for
float32 accumulation over the batch without hiding a wrong formula, which
gives errors of order 1). Parameters after five steps are compared at 1e-3:
Adam divides by sqrt(v), so float32 noise in tiny gradients is amplified into
the update. Exit status: 0 all within tolerance, 1 a mismatch, 3 torch missing.
"""
import json
import math
import struct
import sys

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError as exc:  # depends on the machine
    print(f"torch_crosscheck: cannot import torch ({exc}); install python3-torch, run with /usr/bin/python3",
          file=sys.stderr)
    sys.exit(3)

NP_DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "U16": "<u2", "U8": "u1"}


def read_safetensors(path):
    with open(path, "rb") as fh:
        blob = fh.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=NP_DTYPES[entry["dtype"]])
        tensors[name] = arr.reshape(entry["shape"]).copy()
    return tensors, meta


class GPT(torch.nn.Module):
    """nanoGPT's GPT: wte + wpe, pre-LN blocks (causal self-attention with fused
    c_attn, GELU MLP of width 4C), ln_f, LM head (tied to wte unless untied)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        C, V, T, L = cfg["n_embd"], cfg["vocab_size"], cfg["block_size"], cfg["n_layer"]
        bias = cfg["bias"]
        P = torch.nn.Parameter
        z = lambda *s: P(torch.zeros(*s, dtype=torch.float64))
        self.params = torch.nn.ParameterDict()
        self.names = ["transformer.wte.weight", "transformer.wpe.weight"]
        shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C)}
        for l in range(L):
            h = f"transformer.h.{l}."
            block = [("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.c_attn.weight", (3 * C, C)),
                     ("attn.c_attn.bias", (3 * C,)), ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                     ("ln_2.weight", (C,)), ("ln_2.bias", (C,)), ("mlp.c_fc.weight", (4 * C, C)),
                     ("mlp.c_fc.bias", (4 * C,)), ("mlp.c_proj.weight", (C, 4 * C)), ("mlp.c_proj.bias", (C,))]
            for name, shape in block:
                if name.endswith(".bias") and not bias:
                    continue
                self.names.append(h + name)
                shapes[h + name] = shape
        self.names.append("transformer.ln_f.weight")
        shapes["transformer.ln_f.weight"] = (C,)
        if bias:
            self.names.append("transformer.ln_f.bias")
            shapes["transformer.ln_f.bias"] = (C,)
        if not cfg["tie_embeddings"]:
            self.names.append("lm_head.weight")
            shapes["lm_head.weight"] = (V, C)
        for name in self.names:
            self.params[name.replace(".", "__")] = z(*shapes[name])

    def p(self, name):
        key = name.replace(".", "__")
        return self.params[key] if key in self.params else None

    def forward(self, idx):
        cfg = self.cfg
        B, T = idx.shape
        C, nh = cfg["n_embd"], cfg["n_head"]
        hs = C // nh
        x = self.p("transformer.wte.weight")[idx] + self.p("transformer.wpe.weight")[:T]
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for l in range(cfg["n_layer"]):
            h = f"transformer.h.{l}."
            a = F.layer_norm(x, (C,), self.p(h + "ln_1.weight"), self.p(h + "ln_1.bias"), 1e-5)
            qkv = F.linear(a, self.p(h + "attn.c_attn.weight"), self.p(h + "attn.c_attn.bias"))
            q, k, v = qkv.split(C, dim=2)
            q = q.view(B, T, nh, hs).transpose(1, 2)
            k = k.view(B, T, nh, hs).transpose(1, 2)
            v = v.view(B, T, nh, hs).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
            x = x + F.linear(y, self.p(h + "attn.c_proj.weight"), self.p(h + "attn.c_proj.bias"))
            m = F.layer_norm(x, (C,), self.p(h + "ln_2.weight"), self.p(h + "ln_2.bias"), 1e-5)
            m = F.gelu(F.linear(m, self.p(h + "mlp.c_fc.weight"), self.p(h + "mlp.c_fc.bias")))
            x = x + F.linear(m, self.p(h + "mlp.c_proj.weight"), self.p(h + "mlp.c_proj.bias"))
        x = F.layer_norm(x, (C,), self.p("transformer.ln_f.weight"), self.p("transformer.ln_f.bias"), 1e-5)
        head = self.p("transformer.wte.weight") if cfg["tie_embeddings"] else self.p("lm_head.weight")
        return F.linear(x, head)


def rel_err(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    return float(np.max(np.abs(ours - ref))) / scale


def main():
    if len(sys.argv) != 3:
        print("usage: torch_crosscheck.py MODEL.safetensors DUMP.safetensors", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    weights, meta = read_safetensors(sys.argv[1])
    dump, _ = read_safetensors(sys.argv[2])
    cfg = json.loads(meta["nanogptq.model"])
    model = GPT(cfg)
    with torch.no_grad():
        for name in model.names:
            model.p(name).copy_(torch.from_numpy(weights[name].astype(np.float64)))
    if cfg["tie_embeddings"]:
        assert np.array_equal(weights["lm_head.weight"], weights["transformer.wte.weight"])

    failures = []

    def check(what, ours, ref, tol):
        e = rel_err(ours, ref)
        status = "ok" if e <= tol else "MISMATCH"
        print(f"  {what:48s} rel err {e:.2e} (tol {tol:.0e}) {status}")
        if e > tol:
            failures.append(what)

    tokens = torch.from_numpy(dump["tokens"].astype(np.int64))
    targets = torch.from_numpy(dump["targets"].astype(np.int64))
    V = cfg["vocab_size"]
    print(f"config {cfg}")
    logits = model(tokens[0])
    loss = F.cross_entropy(logits.view(-1, V), targets[0].reshape(-1))
    loss.backward()
    check("logits", dump["logits"], logits.detach().numpy(), 1e-4)
    check("loss", dump["loss"], [loss.item()], 1e-4)
    for name in model.names:
        check("grad " + name, dump["grad." + name], model.p(name).grad.numpy(), 1e-4)
        if name.endswith("attn.c_attn.bias"):
            C = cfg["n_embd"]
            g = dump["grad." + name]
            rel = float(np.max(np.abs(g[C:2 * C]))) / max(float(np.max(np.abs(g))), 1e-30)
            status = "ok" if rel <= 1e-4 else "MISMATCH"
            print(f"  {'key-bias gradient is ~0 (softmax shift)':48s} rel size {rel:.2e} (tol 1e-04) {status}")
            if rel > 1e-4:
                failures.append("key-bias gradient of " + name)

    # five AdamW steps: decay on 2-D tensors only, clipping at 1.0, the C run's learning rates
    decay = [model.p(n) for n in model.names if model.p(n).dim() >= 2]
    no_decay = [model.p(n) for n in model.names if model.p(n).dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.99), eps=1e-8, foreach=False)
    losses, norms = [], []
    for s in range(len(dump["lrs"])):
        for g in opt.param_groups:
            g["lr"] = float(dump["lrs"][s])
        opt.zero_grad(set_to_none=True)
        logits = model(tokens[s + 1])
        loss = F.cross_entropy(logits.view(-1, V), targets[s + 1].reshape(-1))
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
        opt.step()
        losses.append(loss.item())
    check("AdamW step losses", dump["step_losses"], losses, 1e-4)
    check("gradient norms before clipping", dump["grad_norms"], norms, 1e-4)
    C = cfg["n_embd"]
    for name in model.names:
        ours, ref = dump["final." + name], model.p(name).detach().numpy()
        if name.endswith("attn.c_attn.bias"):
            # The key bias adds the same amount to every score of a query row, which
            # softmax ignores: its true gradient is exactly 0, so Adam turns rounding
            # noise into steps of size lr in both implementations. Compare q and v only.
            keep = np.r_[0:C, 2 * C:3 * C]
            ours, ref = ours[keep], ref[keep]
        check("after 5 steps " + name, ours, ref, 1e-3)
    if failures:
        print(f"torch_crosscheck: {len(failures)} mismatches: {', '.join(failures)}", file=sys.stderr)
        return 1
    print(f"torch_crosscheck: all {len(model.names) * 2 + 4} comparisons within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
