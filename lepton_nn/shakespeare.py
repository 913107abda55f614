"""A character-level language model of Shakespeare: what `lepton-nn shakespeare` runs.

Two models, each trained on Tiny Shakespeare (lepton_nn/data/shakespeare.py) to predict the next
character:

- "gpt": nanoGPT's "baby GPT" for a laptop CPU — 4 layers, 4 heads, 128-dim embeddings,
  context 64, batch 12, 2000 iterations, no dropout, AdamW (lr 1e-3, betas (0.9, 0.99), weight
  decay 0.1 on matrices only), 100 warm-up iterations then cosine decay to 1e-4, gradients
  clipped to norm 1. Its blocks are pre-norm: x + attn(ln(x)), then x + mlp(ln(x)).
- "lstm": the classic char-rnn: an embedding, a 2-layer LSTM, a linear read-out.

Both are plain lepton_nn.nn modules; GPT.state_dict() has nanoGPT's names ("transformer.h.0.attn.
c_attn.weight", ...), so weights move to and from a PyTorch copy (lepton_nn/bench/torch_gpt.py).
"""
import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from lepton_nn import checks, fileio, lr_scheduler, nn, optim
from lepton_nn import functional as F
from lepton_nn.tensor import Tensor, no_grad


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    bias: bool = True


@dataclass
class Recipe:
    """nanoGPT's README recipe for a CPU (the defaults), and the evaluation it prints."""
    batch_size: int = 12
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.99)
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20          # batches per split at each evaluation during training
    final_eval_iters: int = 200   # batches per split for the reported final losses


class MLP(nn.Module):
    """Linear(E, 4E) → GELU → Linear(4E, E)."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = nn.CausalSelfAttention(config.n_embd, config.n_head, bias=config.bias)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Trunk(nn.Module):
    """The embeddings, the blocks and the final LayerNorm (nanoGPT's `transformer`)."""

    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)


class GPT(nn.Module):
    """Token and position embeddings → n_layer Blocks → LayerNorm → Linear to vocabulary logits."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = Trunk(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self):
        """nanoGPT's: N(0, 0.02) for every matrix and embedding, zero biases, and N(0, 0.02/√(2L))
        for the projections that add into the residual stream (their sum grows with depth)."""
        from lepton_nn import rng
        gen = rng.generator()
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.data[...] = 0
            elif p.ndim >= 2:
                std = 0.02 / math.sqrt(2 * self.config.n_layer) if name.endswith("c_proj.weight") else 0.02
                p.data[...] = gen.normal(0.0, std, p.shape)

    def forward(self, idx):
        """idx (B, T) integer ids → logits (B, T, vocab_size)."""
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        t = idx.shape[1]
        if t > self.config.block_size:
            raise ValueError(f"GPT: sequence length {t} exceeds block_size {self.config.block_size}")
        trunk = self.transformer
        x = trunk.wte(idx) + trunk.wpe(np.arange(t))
        for block in trunk.h:
            x = block(x)
        return self.lm_head(trunk.ln_f(x))


class CharLSTM(nn.Module):
    """char-rnn: Embedding(V, E) → LSTM(E, H, num_layers, batch_first) → Linear(H, V)."""

    def __init__(self, vocab_size, embedding_dim=128, hidden_size=256, num_layers=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx):
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        output, _ = self.lstm(self.embedding(idx))
        return self.head(output)


def sequence_loss(logits, targets):
    """Mean cross-entropy over every position: logits (B, T, V), targets (B, T)."""
    b, t, v = logits.shape
    return F.cross_entropy(logits.reshape(b * t, v), np.asarray(targets).reshape(b * t))


def adamw_groups(model, weight_decay):
    """nanoGPT's split: matrices and embeddings decay, biases and LayerNorm weights do not."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def estimate_loss(model, data, recipe, block_size, rng):
    """Mean loss over eval_iters random batches of each split, without building a graph."""
    model.eval()
    out = {}
    with no_grad():
        for split in ("train", "val"):
            losses = [sequence_loss(model(x), y).item()
                      for x, y in (data.batch(split, recipe.batch_size, block_size, rng)
                                   for _ in range(recipe.eval_iters))]
            out[split] = float(np.mean(losses))
    model.train()
    return out


def generate(model, data, prompt="\n", length=300, temperature=0.8, top_k=None, seed=0, block_size=64):
    """Sample `length` characters after `prompt`: softmax(logits / temperature), keeping the top_k."""
    checks.finite_number(temperature, "generate", "temperature", minimum=1e-6)
    gen = np.random.default_rng(seed)
    ids = list(data.encode(prompt))
    model.eval()
    with no_grad():
        for _ in range(length):
            context = np.array(ids[-block_size:])[None, :]
            logits = model(context).data[0, -1].astype(np.float64) / temperature
            if top_k is not None:
                logits[logits < np.sort(logits)[-min(top_k, len(logits))]] = -np.inf
            p = np.exp(logits - logits.max())
            ids.append(int(gen.choice(len(p), p=p / p.sum())))
    model.train()
    return data.decode(ids[len(prompt):])


def train(model_kind="gpt", data_dir=None, iters=None, seed=0, save=None, out=print, progress=True,
          recipe=None, temperature=0.8, top_k=None, sample_length=300):
    """Train model_kind ("gpt" or "lstm") on Tiny Shakespeare with the recipe; returns a dict with
    the final train/val losses, ms per iteration, the model, the data and a sample."""
    import lepton_nn
    from lepton_nn import kernels
    from lepton_nn.data import shakespeare
    recipe = recipe or Recipe()
    if iters is not None:
        recipe.max_iters = checks.int_at_least(iters, "shakespeare", "iters", 1)
    if model_kind not in ("gpt", "lstm"):
        raise ValueError(f"shakespeare: model must be 'gpt' or 'lstm', got {model_kind!r}")
    if save is not None:
        fileio.check_writable(save, "shakespeare: save")
    backend = kernels.active_name()
    data = shakespeare.CharData.from_text(shakespeare.load_text(data_dir))
    lepton_nn.seed(seed)
    config = GPTConfig(vocab_size=data.vocab_size)
    model = GPT(config) if model_kind == "gpt" else CharLSTM(data.vocab_size)
    n_params = sum(p.size for p in model.parameters())
    opt = optim.AdamW(adamw_groups(model, recipe.weight_decay), lr=recipe.learning_rate, betas=recipe.betas)
    schedule = lr_scheduler.WarmupCosineLR(opt, min(recipe.warmup_iters, recipe.max_iters - 1), recipe.max_iters,
                                           recipe.min_lr)
    gen = np.random.default_rng(seed)
    out(f"training a char {model_kind} ({n_params:,} parameters) on Tiny Shakespeare: {recipe.max_iters} "
        f"iterations of batch {recipe.batch_size} × {config.block_size} characters, backend {backend}")
    bar = _progress_bar(recipe.max_iters) if progress else None
    start, step_ms = time.perf_counter(), []
    for it in range(recipe.max_iters):
        t0 = time.perf_counter()
        x, y = data.batch("train", recipe.batch_size, config.block_size, gen)
        loss = sequence_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        schedule.step()
        step_ms.append(1000 * (time.perf_counter() - t0))
        if not np.isfinite(loss.item()):
            raise FloatingPointError(f"shakespeare: the training loss became {loss.item()} at iteration {it}")
        if bar is not None:
            bar.set_postfix_str(f"loss {loss.item():.4f}, {np.median(step_ms[-50:]):.1f} ms/iter")
            bar.update(1)
        if (it + 1) % recipe.eval_interval == 0 or it + 1 == recipe.max_iters:
            losses = estimate_loss(model, data, recipe, config.block_size, gen)
            (bar.write if bar is not None else out)(
                f"iter {it + 1}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    final = Recipe(batch_size=recipe.batch_size, eval_iters=recipe.final_eval_iters)
    losses = estimate_loss(model, data, final, config.block_size, np.random.default_rng(1))
    sample = generate(model, data, length=sample_length, temperature=temperature, top_k=top_k, seed=seed,
                      block_size=config.block_size)
    out(f"\n{recipe.max_iters} iterations in {seconds:.0f} s ({np.median(step_ms):.1f} ms/iteration, median); "
        f"final train loss {losses['train']:.4f}, val loss {losses['val']:.4f} ({recipe.final_eval_iters} batches each)")
    out(f"\nsample (temperature {temperature:g}{f', top-k {top_k}' if top_k else ''}):\n{sample}")
    if save:
        save_model(model, data, save, model_kind)
        out(f"\nmodel saved to {save}")
    return {"train_loss": losses["train"], "val_loss": losses["val"], "ms_per_iter": float(np.median(step_ms)),
            "seconds": seconds, "model": model, "data": data, "sample": sample}


def _progress_bar(total):
    import sys

    from tqdm import tqdm
    return tqdm(total=total, unit="iter", file=sys.stdout, mininterval=0.5, dynamic_ncols=True)


def save_model(model, data, path, model_kind):
    """The model's config, vocabulary and state_dict in lepton_nn's .lnn file format."""
    from lepton_nn import __version__
    from lepton_nn.keras import saving
    state = model.state_dict()
    names = list(state)
    config = {"char_model": model_kind, "chars": data.chars,
              "config": asdict(model.config) if model_kind == "gpt" else None,
              "weights": [{"name": n, "file": f"weights/{i:03d}.npy"} for i, n in enumerate(names)]}
    saving.write(path, config, {f"weights/{i:03d}.npy": np.asarray(state[n]) for i, n in enumerate(names)},
                 __version__)
