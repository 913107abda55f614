"""Reinforcement learning on Gymnasium's CartPole-v1: what `lepton-nn rl` runs.

Two classic algorithms, each a short PyTorch-style loop on lepton_nn's nn, optim and functional
(every gradient comes from the autograd engine); Gymnasium is the environment (the extra
`pip install -e ".[rl]"`), nothing of the environment is ours.

- `reinforce`: REINFORCE with a learned baseline (Williams 1992; Sutton & Barto §13.4). After
  each episode, ascend ∇J ≈ Σ_t ∇log π(a_t|s_t)·(G_t − b(s_t)), where G_t is the discounted
  return from step t and b(s) ≈ E[G | s] a value network fitted to the returns (MSE).
- `dqn`: deep Q-learning (Mnih et al. 2015): ε-greedy actions, a replay buffer, and a target
  network that makes the regression target r + γ·max_a' Q_target(s', a') hold still.

Derivations, the budget and the measured runs: docs/rl.md. "Solved" is CartPole-v1's bar: a
mean return ≥ 475 over 100 consecutive episodes. Runs are repeatable: the seed fixes lepton_nn's
initialisation (lepton_nn.seed), the sampling (np.random.default_rng(seed)) and the environment
(env.reset(seed=seed) on the first episode, action_space.seed(seed)).
"""
import time
from dataclasses import dataclass, field

import numpy as np

import lepton_nn
from lepton_nn import checks, nn, optim, plots
from lepton_nn import functional as F
from lepton_nn.tensor import no_grad

ENV_ID = "CartPole-v1"
SOLVED_MEAN, SOLVED_WINDOW = 475.0, 100  # CartPole-v1's reward_threshold, over 100 consecutive episodes


def gymnasium():
    """The gymnasium module, or an ImportError saying which extra installs it."""
    try:
        import gymnasium as gym
    except ImportError as err:
        raise ImportError('lepton_nn.rl needs gymnasium, the optional extra "rl": pip install -e ".[rl]"') from err
    return gym


def make_env(seed, env_id=ENV_ID):
    """The environment, its action sampling seeded (its first reset is seeded by the caller)."""
    env = gymnasium().make(env_id)
    env.action_space.seed(seed)
    return env


def mlp(inputs, hidden, outputs, dtype=np.float32):
    """inputs → hidden → ReLU → outputs (PyTorch's default initialisation, from lepton_nn.rng)."""
    return nn.Sequential(nn.Linear(inputs, hidden, dtype=dtype), nn.ReLU(), nn.Linear(hidden, outputs, dtype=dtype))


# --------------------------------------------------------------------------- the pieces, each testable alone
def discounted_returns(rewards, gamma):
    """G_t = r_t + γ·G_{t+1}, G_T = 0: the return from each step to the episode's end, (T,) float32."""
    returns = np.zeros(len(rewards), dtype=np.float32)
    future = 0.0
    for t in reversed(range(len(rewards))):
        future = rewards[t] + gamma * future
        returns[t] = future
    return returns


def policy_gradient_loss(logits, actions, advantages):
    """−mean_t log π(a_t|s_t)·A_t for logits (T, A), actions (T,) int, advantages (T,) constants.

    Its gradient is −mean_t ∇log π(a_t|s_t)·A_t: descending it ascends the policy gradient.
    log π(a|s) = log_softmax(logits)[a], picked per row by integer indexing.
    """
    log_probs = F.log_softmax(logits, axis=-1)[np.arange(len(actions)), actions]
    return -(log_probs * advantages).mean()


def td_target(rewards, next_q, terminated, gamma):
    """y = r + γ·(1 − terminated)·max_a' Q_target(s', a'), for next_q (B, A) from the target network.

    A truncated episode (CartPole's 500-step limit) is not terminated: its s' still has a future,
    so the target bootstraps from it; only a terminal state's value is 0.
    """
    return (rewards + gamma * (1.0 - terminated) * next_q.max(axis=1)).astype(np.float32)


class ReplayBuffer:
    """The last `capacity` transitions (s, a, r, s', terminated) in a ring of NumPy arrays;
    sample() draws a batch uniformly, with replacement, from those stored."""

    def __init__(self, capacity, state_size):
        self.capacity = checks.int_at_least(capacity, "ReplayBuffer", "capacity", 1)
        checks.int_at_least(state_size, "ReplayBuffer", "state_size", 1)
        self.states = np.zeros((capacity, state_size), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.next_states = np.zeros((capacity, state_size), np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.size, self.next = 0, 0

    def push(self, state, action, reward, next_state, terminated):
        i = self.next
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.terminated[i] = next_state, terminated
        self.next = (i + 1) % self.capacity  # the oldest transition is overwritten first
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size, rng):
        if self.size == 0:
            raise ValueError("ReplayBuffer: cannot sample from an empty buffer")
        i = rng.integers(0, self.size, batch_size)
        return self.states[i], self.actions[i], self.rewards[i], self.next_states[i], self.terminated[i]

    def __len__(self):
        return self.size


def solved(returns):
    """Whether the last SOLVED_WINDOW episodes' mean return reaches SOLVED_MEAN."""
    return len(returns) >= SOLVED_WINDOW and float(np.mean(returns[-SOLVED_WINDOW:])) >= SOLVED_MEAN


def sample_action(probs, rng):
    """An action drawn from the probabilities `probs` (A,): the first whose cumulative sum passes u ~ U(0, 1)."""
    return min(int(np.searchsorted(np.cumsum(probs), rng.random())), len(probs) - 1)


# --------------------------------------------------------------------------- the algorithms
@dataclass
class ReinforceConfig:
    episodes: int = 2000        # the budget: stop here if not solved before
    gamma: float = 0.99
    lr: float = 1e-3            # Adam, policy and baseline
    hidden: int = 128


@dataclass
class DQNConfig:
    episodes: int = 1000
    gamma: float = 0.99
    lr: float = 5e-4            # Adam
    hidden: int = 128
    buffer_size: int = 50_000
    batch_size: int = 64
    learning_starts: int = 1000   # env steps of random play before the first update
    train_every: int = 1          # env steps per gradient update
    target_every: int = 500       # env steps between copies of the online network into the target
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_decay_steps: int = 10_000  # ε falls linearly from eps_start to eps_end over these env steps
    grad_clip: float = 10.0

    def epsilon(self, step):
        """ε after `step` env steps: linear from eps_start to eps_end over eps_decay_steps, then flat."""
        return self.eps_start + min(step / self.eps_decay_steps, 1.0) * (self.eps_end - self.eps_start)


@dataclass
class Run:
    """What a training run returns: the return of every episode, when it was solved, and its cost."""
    algo: str
    seed: int
    returns: list = field(default_factory=list)
    solved_at: int = None     # episodes played when the 100-episode mean first reached 475, or None
    seconds: float = 0.0
    env_steps: int = 0
    updates: int = 0
    model: object = None

    def summary(self):
        mean = float(np.mean(self.returns[-SOLVED_WINDOW:])) if self.returns else float("nan")
        outcome = (f"solved in {self.solved_at} episodes" if self.solved_at else
                   f"not solved in {len(self.returns)} episodes")
        return (f"{self.algo} seed {self.seed}: {outcome} (mean of the last {min(len(self.returns), SOLVED_WINDOW)} "
                f"returns {mean:.1f}), {self.seconds:.1f} s, {self.env_steps:,} env steps, {self.updates:,} updates, "
                f"{self.updates / self.seconds if self.seconds else 0:.0f} updates/s and "
                f"{self.env_steps / self.seconds if self.seconds else 0:,.0f} env steps/s over the run")


class _Progress:
    """A tqdm bar over episodes showing the last return and the mean of the last 100, or nothing."""

    def __init__(self, total, label, show):
        self.bar = None
        if show:
            import sys

            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit="ep", file=sys.stdout, mininterval=0.25, dynamic_ncols=True)

    def update(self, returns):
        if self.bar is not None:
            self.bar.set_postfix_str(f"return {returns[-1]:.0f}, mean100 {np.mean(returns[-SOLVED_WINDOW:]):.1f}",
                                     refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _start(algo, seed, config, default):
    checks.int_at_least(seed, algo, "seed", 0)
    config = config or default
    checks.int_at_least(config.episodes, algo, "episodes", 1)
    if not 0 <= config.gamma <= 1:
        raise ValueError(f"{algo}: gamma must lie in [0, 1], got {config.gamma!r}")
    lepton_nn.seed(seed)  # the networks' initialisation
    return config, make_env(seed), np.random.default_rng(seed), Run(algo, seed)


def reinforce_update(policy, baseline, opt, states, actions, rewards, gamma):
    """One REINFORCE step on one episode (states (T, S), actions (T,), rewards (T,)); returns the loss.

    loss = −mean_t log π(a_t|s_t)·A_t + mean_t (b(s_t) − G_t)², A_t = G_t − b(s_t) held constant
    (no gradient flows from the policy's term into the baseline) and standardised to mean 0, std 1
    (a scale the step size need not adapt to as returns grow from 10 to 500).
    """
    returns = discounted_returns(rewards, gamma)
    values = baseline(states).reshape(-1)
    advantages = returns - values.data
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    loss = policy_gradient_loss(policy(states), actions, advantages) + F.mse_loss(values, returns)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def dqn_update(q_net, target, opt, batch, gamma, grad_clip):
    """One DQN step on a replayed batch (s, a, r, s', terminated); returns the loss.

    loss = mean_i (Q(s_i, a_i) − y_i)², y = td_target(...) from the target network, as a constant;
    Q(s_i, a_i) is row i, column a_i of the online network's (B, A) output.
    """
    states, actions, rewards, next_states, terminated = batch
    with no_grad():
        y = td_target(rewards, target(next_states).data, terminated, gamma)
    loss = F.mse_loss(q_net(states)[np.arange(len(actions)), actions], y)
    opt.zero_grad()
    loss.backward()
    optim.clip_grad_norm_(q_net.parameters(), grad_clip)
    opt.step()
    return loss.item()


def policy_action(policy, state, rng):
    """a ~ π(·|s): one state through the policy, softmax, a draw."""
    with no_grad():
        probs = F.softmax(policy(state[None]), axis=-1).data[0]
    return sample_action(probs, rng)


def greedy_action(q_net, state):
    """argmax_a Q(s, a) for one state."""
    with no_grad():
        return int(np.argmax(q_net(state[None]).data[0]))


def reinforce(seed=0, config=None, progress=False):
    """REINFORCE with a learned baseline on CartPole-v1 (see the module docstring); returns a Run.
    Play an episode with a ~ π(·|s), then one reinforce_update on it; stop when solved."""
    config, env, rng, run = _start("reinforce", seed, config, ReinforceConfig())
    n_states, n_actions = env.observation_space.shape[0], env.action_space.n
    policy = mlp(n_states, config.hidden, n_actions)
    baseline = mlp(n_states, config.hidden, 1)  # b(s) ≈ E[G | s]
    opt = optim.Adam([*policy.parameters(), *baseline.parameters()], lr=config.lr)
    bar, start = _Progress(config.episodes, "reinforce", progress), time.perf_counter()
    try:
        for episode in range(config.episodes):
            states, actions, rewards = [], [], []
            state, _ = env.reset(seed=seed if episode == 0 else None)
            done = False
            while not done:
                action = policy_action(policy, state, rng)
                states.append(state)
                actions.append(action)
                state, reward, terminated, truncated, _ = env.step(action)
                rewards.append(reward)
                done = terminated or truncated
            reinforce_update(policy, baseline, opt, np.array(states), np.array(actions), rewards, config.gamma)
            run.env_steps, run.updates = run.env_steps + len(rewards), run.updates + 1
            if _episode_done(run, sum(rewards), bar):
                break
    except BaseException:  # Ctrl-C, a NaN error, Gymnasium's: close the env and the bar, then re-raise
        _close(env, bar)
        raise
    return _finish(run, env, bar, start, policy)


def dqn(seed=0, config=None, progress=False):
    """DQN on CartPole-v1 (see the module docstring); returns a Run. Each env step: act
    ε-greedily, store the transition, and (every train_every steps, once learning_starts steps
    are stored) one dqn_update on a replayed batch; every target_every steps copy the online
    network into the target network."""
    config, env, rng, run = _start("dqn", seed, config, DQNConfig())
    n_states, n_actions = env.observation_space.shape[0], env.action_space.n
    q_net = mlp(n_states, config.hidden, n_actions)
    target = mlp(n_states, config.hidden, n_actions)
    target.load_state_dict(q_net.state_dict())
    opt = optim.Adam(q_net.parameters(), lr=config.lr)
    buffer = ReplayBuffer(config.buffer_size, n_states)
    bar, start = _Progress(config.episodes, "dqn", progress), time.perf_counter()
    try:
        for episode in range(config.episodes):
            state, _ = env.reset(seed=seed if episode == 0 else None)
            done, episode_return = False, 0.0
            while not done:
                epsilon = config.epsilon(run.env_steps)
                action = int(rng.integers(n_actions)) if rng.random() < epsilon else greedy_action(q_net, state)
                next_state, reward, terminated, truncated, _ = env.step(action)
                buffer.push(state, action, reward, next_state, terminated)
                state, episode_return, done = next_state, episode_return + reward, terminated or truncated
                run.env_steps += 1
                if run.env_steps >= config.learning_starts and run.env_steps % config.train_every == 0:
                    dqn_update(q_net, target, opt, buffer.sample(config.batch_size, rng), config.gamma, config.grad_clip)
                    run.updates += 1
                if run.env_steps % config.target_every == 0:
                    target.load_state_dict(q_net.state_dict())
            if _episode_done(run, episode_return, bar):
                break
    except BaseException:  # Ctrl-C, a NaN error, Gymnasium's: close the env and the bar, then re-raise
        _close(env, bar)
        raise
    return _finish(run, env, bar, start, q_net)


def _episode_done(run, episode_return, bar):
    """Record the episode's return; True when the run is solved."""
    run.returns.append(float(episode_return))
    bar.update(run.returns)
    if solved(run.returns):
        run.solved_at = len(run.returns)
    return run.solved_at is not None


def _close(env, bar):
    bar.close()
    env.close()


def _finish(run, env, bar, start, model):
    _close(env, bar)
    run.seconds, run.model = time.perf_counter() - start, model
    return run


TRAINERS = {"reinforce": reinforce, "dqn": dqn}
CONFIGS = {"reinforce": ReinforceConfig, "dqn": DQNConfig}


# --------------------------------------------------------------------------- plot and save
def running_mean(returns, window=SOLVED_WINDOW):
    """The mean of the last `window` returns at each episode (of all so far, for the first window − 1)."""
    sums = np.cumsum(np.concatenate([[0.0], np.asarray(returns, dtype=float)]))
    ends = np.arange(1, len(returns) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_returns(returns, path, title=ENV_ID):
    """Write the return of every episode and its 100-episode running mean to a PNG, 800×450 pixels."""
    plt = plots.pyplot()
    episodes = np.arange(1, len(returns) + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(episodes, returns, lw=0.8, alpha=0.5, label="return")
    ax.plot(episodes, running_mean(returns), lw=2, label=f"mean of the last {SOLVED_WINDOW}")
    ax.axhline(SOLVED_MEAN, color="grey", ls="--", lw=1, label=f"solved: mean ≥ {SOLVED_MEAN:g}")
    ax.set(xlabel="episode", ylabel="return", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return plots.save(fig, path)


def save_policy(run, path):
    """The trained network (the policy, or DQN's Q-network) in lepton_nn's .lnn file format."""
    from lepton_nn import __version__
    from lepton_nn.keras import saving
    state = run.model.state_dict()
    first, last = run.model[0], run.model[2]
    config = {"rl_policy": run.algo, "env": ENV_ID, "seed": run.seed, "solved_at": run.solved_at,
              "sizes": [first.in_features, first.out_features, last.out_features],
              "weights": [{"name": n, "file": f"weights/{i:03d}.npy"} for i, n in enumerate(state)]}
    saving.write(path, config, {f"weights/{i:03d}.npy": state[n] for i, n in enumerate(state)}, __version__)


def load_policy(path):
    """(network, config) from a file save_policy wrote; act with greedy_action(network, state)."""
    from lepton_nn.keras import saving
    config, arrays = saving.read(path)
    if "rl_policy" not in config:
        raise saving.ModelFileError(path, "not an rl policy (no 'rl_policy' in config.json): written by save_policy?")
    network = mlp(*config["sizes"])
    network.load_state_dict({w["name"]: arrays[w["file"]] for w in config["weights"]})
    return network, config
