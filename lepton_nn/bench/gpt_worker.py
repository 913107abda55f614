"""One run of the Shakespeare benchmark, alone in a fresh process: iterations of nanoGPT's
baby-GPT recipe (lepton_nn/shakespeare.py) by lepton_nn or by PyTorch, figures printed as one
JSON line.

    python lepton_nn/bench/gpt_worker.py --run torch --data DIR [--iters 60] [--warmup 5]

Run as a script, as train_worker.py is, and for the same reason: the torch run imports the
PyTorch model next to this file (torch_gpt.py) and never lepton_nn. Each run builds the model,
the AdamW with its two parameter groups, the warm-up + cosine schedule and the clipping, then
times every iteration (batch, forward, loss, backward, clip, step, schedule) after `warmup`
untimed ones; the figure is the median of BLOCKS blocks' time per iteration.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_worker import BLOCKS, environment_report, peak_rss_mb  # noqa: E402 (this folder, not lepton_nn)

LEPTON_RUNS = ("numpy", "numba", "c")
PEERS = ("torch",)


def lepton_step(run, data_dir, seed):
    """A function doing one training iteration of lepton_nn's baby GPT on backend `run`."""
    import lepton_nn
    from lepton_nn import lr_scheduler, optim, shakespeare
    from lepton_nn.data.shakespeare import CharData, load_text
    lepton_nn.set_backend(run)
    data = CharData.from_text(load_text(data_dir))
    lepton_nn.seed(seed)
    recipe = shakespeare.Recipe()
    model = shakespeare.GPT(shakespeare.GPTConfig(vocab_size=data.vocab_size))
    opt = optim.AdamW(shakespeare.adamw_groups(model, recipe.weight_decay), lr=recipe.learning_rate,
                      betas=recipe.betas)
    schedule = lr_scheduler.WarmupCosineLR(opt, recipe.warmup_iters, recipe.max_iters, recipe.min_lr)
    rng = np.random.default_rng(seed)

    def step():
        x, y = data.batch("train", recipe.batch_size, 64, rng)
        loss = shakespeare.sequence_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        schedule.step()
        return loss.item()
    return step, f"lepton_nn {lepton_nn.__version__} ({run})"


def torch_step(data_dir, seed):
    import torch
    import torch_gpt
    torch.manual_seed(seed)
    vocab, train, _ = torch_gpt.load(data_dir)
    model = torch_gpt.GPT(vocab)
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    rng, it = np.random.default_rng(seed), [0]

    def step():
        for group in opt.param_groups:
            group["lr"] = torch_gpt.lr_at(it[0], 2000)
        x, y = torch_gpt.batch(train, rng)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        it[0] += 1
        return loss.item()
    return step, f"torch {torch.__version__} ({torch.get_num_threads()} threads)"


def measure(run, data_dir, iters, warmup, seed=0):
    if run in LEPTON_RUNS:
        step, framework = lepton_step(run, data_dir, seed)
    elif run in PEERS:
        step, framework = torch_step(data_dir, seed)
    else:
        raise ValueError(f"unknown run {run!r}: one of {', '.join(LEPTON_RUNS + PEERS)}")
    first_loss = step()
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    blocks = np.array_split(np.array(times), min(BLOCKS, iters))
    return {"run": run, "framework": framework, "iter_ms": 1e3 * float(np.median([b.mean() for b in blocks])),
            "first_loss": first_loss, "peak_rss_mb": peak_rss_mb(), "environment": environment_report()}


def main(argv=None):
    p = argparse.ArgumentParser(description="one Shakespeare-benchmark run in this process; prints one JSON line")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True, help="directory holding input.txt")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args(argv)
    if a.warmup < 1 or a.iters < 1:
        raise SystemExit(f"need at least one warm-up and one timed iteration, got {a.warmup} and {a.iters}")
    print(json.dumps(measure(a.run, a.data, a.iters, a.warmup)), flush=True)


if __name__ == "__main__":
    main()
