#!/usr/bin/python3
"""torch_train_step.py: the PyTorch baseline for bench_train_step.

The same model as the C trainer (nanoGPT's model.py: pre-LayerNorm blocks,
fused qkv, causal attention, GELU MLP, optional biases, tied LM head), timed
for full training steps (forward, backward, AdamW update) on random tokens at
B=16, T=256 with two threads. Prints greppable result lines:

    tokens_per_cpu_second <float>   (process CPU time of all threads)
    tokens_per_second <float>

Run with Debian's /usr/bin/python3 (needs python3-torch). Exits 3 with a
message when torch is missing. It measures; it does not train anything useful.
"""
import argparse
import math
import sys
import time

try:
    import torch
    import torch.nn as nn
    from torch.nn import functional as F
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(f"torch_train_step: cannot import torch ({exc}); install python3-torch "
          "and run with /usr/bin/python3", file=sys.stderr)
    sys.exit(3)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch 1.13's nn.LayerNorm has no bias=False)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.n_embd = cfg["n_head"], cfg["n_embd"]
        self.c_attn = nn.Linear(self.n_embd, 3 * self.n_embd, bias=cfg["bias"])
        self.c_proj = nn.Linear(self.n_embd, self.n_embd, bias=cfg["bias"])
        self.attn_dropout = nn.Dropout(cfg["dropout"])
        self.resid_dropout = nn.Dropout(cfg["dropout"])
        T = cfg["block_size"]
        self.register_buffer("mask", torch.tril(torch.ones(T, T)).view(1, 1, T, T),
                             persistent=False)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.c_fc = nn.Linear(C, 4 * C, bias=cfg["bias"])
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * C, C, bias=cfg["bias"])
        self.dropout = nn.Dropout(cfg["dropout"])

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg["n_embd"], cfg["bias"])
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg["n_embd"], cfg["bias"])
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg["vocab_size"], C),
            wpe=nn.Embedding(cfg["block_size"], C),
            drop=nn.Dropout(cfg["dropout"]),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])]),
            ln_f=LayerNorm(C, cfg["bias"]),
        ))
        self.lm_head = nn.Linear(C, cfg["vocab_size"], bias=False)
        if cfg["tie_embeddings"]:
            self.transformer.wte.weight = self.lm_head.weight
        std = cfg["init_std"]
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * cfg["n_layer"]))

    def forward(self, idx, targets=None):
        B, T = idx.size()
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def optimizer(self, lr, weight_decay, betas):
        """AdamW with weight decay on 2-D tensors only (nanoGPT's rule)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


REFERENCE = dict(vocab_size=88, block_size=256, n_layer=6, n_head=6, n_embd=192, bias=False,
                 tie_embeddings=True, dropout=0.0, init_std=0.02)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0)
    args = parser.parse_args()

    torch.manual_seed(1337)
    torch.set_num_threads(args.threads)
    cfg = dict(REFERENCE, dropout=args.dropout)
    model = GPT(cfg)
    model.train()
    opt = model.optimizer(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    nparams = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(1)

    def step():
        idx = torch.randint(0, cfg["vocab_size"], (args.batch, args.seq), generator=gen)
        targets = torch.randint(0, cfg["vocab_size"], (args.batch, args.seq), generator=gen)
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    loss = 0.0
    for _ in range(args.steps):
        loss = step()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = args.batch * args.seq * args.steps
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | params {nparams} | "
          f"B {args.batch} T {args.seq} dropout {args.dropout} | {args.steps} steps in {dt:.2f}s | "
          f"last loss {loss:.4f}")
    print(f"cpu: {1e3 * cpu / args.steps:.1f} ms of CPU time per step "
          f"({cpu / dt:.2f} cores busy on average)")
    print(f"tokens_per_cpu_second {tokens / cpu:.1f}")
    print(f"tokens_per_second {tokens / dt:.1f}")


if __name__ == "__main__":
    main()
