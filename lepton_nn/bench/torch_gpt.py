"""The baby-GPT recipe in plain PyTorch: the peer `lepton-nn shakespeare` is compared with.

nanoGPT's model and README recipe for a CPU (4 layers, 4 heads, 128-dim embeddings, context 64,
batch 12, AdamW lr 1e-3 betas (0.9, 0.99) weight decay 0.1 on matrices, 100 warm-up iterations
then cosine to 1e-4 at 2000, clipping at 1.0), written out here so that it runs without nanoGPT,
with nanoGPT's parameter names (lepton_nn.shakespeare.GPT uses the same ones). It never imports
lepton_nn: run it as a script, in its own process, with PyTorch's own defaults.

    python lepton_nn/bench/torch_gpt.py --data DIR [--iters 2000]     (DIR holds input.txt)
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, bias=True):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, n_embd, bias=True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, bias=True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=True):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head, bias) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd, bias=bias)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def lr_at(it, max_iters, lr=1e-3, min_lr=1e-4, warmup=100):
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    progress = min(1.0, (it - warmup) / max(1, max_iters - warmup))
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


def load(data_dir):
    text = (Path(data_dir) / "input.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text], dtype=np.int64)
    split = int(0.9 * len(ids))
    return len(chars), ids[:split], ids[split:]


def batch(data, rng, batch_size=12, block_size=64):
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.stack([data[s:s + block_size] for s in starts])
    y = np.stack([data[s + 1:s + 1 + block_size] for s in starts])
    return torch.from_numpy(x), torch.from_numpy(y)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="directory holding input.txt")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    vocab, train, val = load(args.data)
    model = GPT(vocab)
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    rng = np.random.default_rng(args.seed)
    print(f"{sum(p.numel() for p in params):,} parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    times = []
    for it in range(args.iters):
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(it, args.iters)
        x, y = batch(train, rng)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(1000 * (time.perf_counter() - start))
        if (it + 1) % 250 == 0:
            print(f"iter {it + 1}: loss {loss.item():.4f}, {np.median(times[-250:]):.1f} ms/iter")
    model.eval()
    eval_rng = np.random.default_rng(1)
    with torch.no_grad():
        losses = {name: np.mean([F.cross_entropy(model(x).view(-1, vocab), y.view(-1)).item()
                                 for x, y in (batch(data, eval_rng) for _ in range(200))])
                  for name, data in (("train", train), ("val", val))}
    print(f"{args.iters} iterations, {np.median(times):.1f} ms/iteration (median); final train loss "
          f"{losses['train']:.4f}, val loss {losses['val']:.4f} (200 batches each)")


if __name__ == "__main__":
    main()
