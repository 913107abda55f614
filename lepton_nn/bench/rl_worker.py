"""One run of the RL benchmark, alone in a fresh process: the updates of REINFORCE and DQN
(lepton_nn/rl.py) by lepton_nn on one backend or by PyTorch, figures printed as one JSON line.

    python lepton_nn/bench/rl_worker.py --run torch --config '{"reinforce": {...}, "dqn": {...}}'
                                        [--updates 300] [--warmup 20] [--threads N]

Run as a script, as train_worker.py is, and for the same reason: the torch run never imports
lepton_nn; its PyTorch twins of the updates are written out below, line for line the
algorithm of rl.py (same 4 → 128 → 2 networks, Adam, losses, clipping; the hyperparameters come
from the parent, which reads them from rl.py's configs). The lepton_nn runs call rl.py itself.

What is timed: gradient updates on fixed synthetic data, no environment (the env costs both the
same, ~8 µs a step), so the figures are the framework's cost alone:
    reinforce   one update on one episode of EPISODE_STEPS steps: both networks forward, the
                returns, the standardised advantages, the loss, backward, Adam
    dqn         one update on a batch drawn from a full replay buffer: the draw, the target
                network's forward, the TD target, Q(s, a), the loss, backward, clipping, Adam
    act         one state through the Q-network and an argmax: what every env step costs
Each figure: `warmup` untimed calls, then `updates` timed ones in BLOCKS blocks; the median
block's rate counts.
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
EPISODE_STEPS = 200   # a mid-training CartPole episode
BUFFER_SIZE = 10_000  # transitions in the replay buffer the DQN batches are drawn from
STATE_SIZE, N_ACTIONS = 4, 2


def synthetic_data(seed=0):
    """An episode (states, actions, rewards) and a replay buffer's arrays, CartPole-shaped."""
    rng = np.random.default_rng(seed)
    episode = (rng.normal(0, 0.5, (EPISODE_STEPS, STATE_SIZE)).astype(np.float32),
               rng.integers(0, N_ACTIONS, EPISODE_STEPS), [1.0] * EPISODE_STEPS)
    buffer = (rng.normal(0, 0.5, (BUFFER_SIZE, STATE_SIZE)).astype(np.float32), rng.integers(0, N_ACTIONS, BUFFER_SIZE),
              np.ones(BUFFER_SIZE, np.float32), rng.normal(0, 0.5, (BUFFER_SIZE, STATE_SIZE)).astype(np.float32),
              (rng.random(BUFFER_SIZE) < 0.02).astype(np.float32))
    return episode, buffer


def lepton_calls(run, config, threads):
    """{figure: a function doing one of it} with lepton_nn's rl.py on backend `run`."""
    import lepton_nn
    from lepton_nn import optim, rl
    lepton_nn.set_backend(run)
    lepton_nn.seed(0)
    rc, dc = rl.ReinforceConfig(**config["reinforce"]), rl.DQNConfig(**config["dqn"])
    (states, actions, rewards), stored = synthetic_data()
    policy, baseline = rl.mlp(STATE_SIZE, rc.hidden, N_ACTIONS), rl.mlp(STATE_SIZE, rc.hidden, 1)
    pg_opt = optim.Adam([*policy.parameters(), *baseline.parameters()], lr=rc.lr)
    q_net, target = rl.mlp(STATE_SIZE, dc.hidden, N_ACTIONS), rl.mlp(STATE_SIZE, dc.hidden, N_ACTIONS)
    q_opt = optim.Adam(q_net.parameters(), lr=dc.lr)
    buffer = rl.ReplayBuffer(BUFFER_SIZE, STATE_SIZE)
    for transition in zip(*stored):
        buffer.push(*transition)
    rng = np.random.default_rng(0)
    calls = {"reinforce": lambda: rl.reinforce_update(policy, baseline, pg_opt, states, actions, rewards, rc.gamma),
             "dqn": lambda: rl.dqn_update(q_net, target, q_opt, buffer.sample(dc.batch_size, rng), dc.gamma,
                                          dc.grad_clip),
             "act": lambda: rl.greedy_action(q_net, states[0])}
    return calls, f"lepton_nn {lepton_nn.__version__} ({run})"


# --------------------------------------------------------------------------- the PyTorch twin of rl.py
def torch_calls(config, threads):
    import torch
    from torch import nn
    from torch.nn import functional as F
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    rc, dc = config["reinforce"], config["dqn"]

    def mlp(inputs, hidden, outputs):
        return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))

    def discounted_returns(rewards, gamma):  # rl.discounted_returns, the same loop
        returns, future = np.zeros(len(rewards), dtype=np.float32), 0.0
        for t in reversed(range(len(rewards))):
            future = rewards[t] + gamma * future
            returns[t] = future
        return returns

    def reinforce_update(policy, baseline, opt, states, actions, rewards, gamma):
        returns = torch.from_numpy(discounted_returns(rewards, gamma))
        states, actions = torch.from_numpy(states), torch.from_numpy(actions)
        values = baseline(states).reshape(-1)
        advantages = returns - values.detach()
        advantages = (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)
        log_probs = F.log_softmax(policy(states), dim=-1).gather(1, actions[:, None]).squeeze(1)
        loss = -(log_probs * advantages).mean() + F.mse_loss(values, returns)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    def dqn_update(q_net, target, opt, batch, gamma, grad_clip):
        states, actions, rewards, next_states, terminated = (torch.from_numpy(a) for a in batch)
        with torch.no_grad():
            y = rewards + gamma * (1.0 - terminated) * target(next_states).max(dim=1).values
        loss = F.mse_loss(q_net(states).gather(1, actions[:, None]).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(q_net.parameters(), grad_clip)
        opt.step()
        return loss.item()

    def greedy_action(q_net, state):
        with torch.no_grad():
            return int(q_net(torch.from_numpy(state[None])).argmax())

    (states, actions, rewards), stored = synthetic_data()
    policy, baseline = mlp(STATE_SIZE, rc["hidden"], N_ACTIONS), mlp(STATE_SIZE, rc["hidden"], 1)
    pg_opt = torch.optim.Adam([*policy.parameters(), *baseline.parameters()], lr=rc["lr"])
    q_net, target = mlp(STATE_SIZE, dc["hidden"], N_ACTIONS), mlp(STATE_SIZE, dc["hidden"], N_ACTIONS)
    q_opt = torch.optim.Adam(q_net.parameters(), lr=dc["lr"])
    rng = np.random.default_rng(0)

    def sample(batch_size):  # rl.ReplayBuffer.sample on a full buffer
        i = rng.integers(0, BUFFER_SIZE, batch_size)
        return tuple(a[i] for a in stored)
    calls = {"reinforce": lambda: reinforce_update(policy, baseline, pg_opt, states, actions, rewards, rc["gamma"]),
             "dqn": lambda: dqn_update(q_net, target, q_opt, sample(dc["batch_size"]), dc["gamma"], dc["grad_clip"]),
             "act": lambda: greedy_action(q_net, states[0])}
    return calls, f"torch {torch.__version__} ({torch.get_num_threads()} threads)"


def rate(fn, updates, warmup):
    """Calls per second: the median over BLOCKS blocks of `updates` timed calls, after `warmup`."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(updates):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    blocks = np.array_split(np.array(times), min(BLOCKS, updates))
    return 1.0 / float(np.median([b.mean() for b in blocks]))


def measure(run, config, updates, warmup, threads=None):
    if run in LEPTON_RUNS:
        calls, framework = lepton_calls(run, config, threads)
    elif run in PEERS:
        calls, framework = torch_calls(config, threads)
    else:
        raise ValueError(f"unknown run {run!r}: one of {', '.join(LEPTON_RUNS + PEERS)}")
    result = {"run": run, "framework": framework, "threads": threads}
    for name, fn in calls.items():
        result[f"{name}_per_s"] = rate(fn, updates, warmup)
    result.update(peak_rss_mb=peak_rss_mb(), environment=environment_report())
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description="one RL-benchmark run in this process; prints one JSON line")
    p.add_argument("--run", required=True)
    p.add_argument("--config", required=True, help="JSON: {'reinforce': {...}, 'dqn': {...}} as rl.py's configs")
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, help="pin the framework's threads (default: its own default)")
    a = p.parse_args(argv)
    if a.warmup < 1 or a.updates < 1:
        raise SystemExit(f"need at least one warm-up and one timed update, got {a.warmup} and {a.updates}")
    print(json.dumps(measure(a.run, json.loads(a.config), a.updates, a.warmup, a.threads)), flush=True)


if __name__ == "__main__":
    main()
