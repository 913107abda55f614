"""lepton_nn/rl.py: the pieces of REINFORCE and DQN checked alone (returns, the policy-gradient
loss and its gradient, the TD target, the replay buffer), then a few episodes of each algorithm
on Gymnasium's CartPole-v1 (skipped without gymnasium: pip install -e ".[rl]"), the CLI's
argument checks and the PNG plot. The runs that reach the "solved" bar are benchmarks, not tests
(docs/rl.md)."""
import importlib.util
import struct

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import cli, rl
from lepton_nn import functional as F

HAS_GYM = importlib.util.find_spec("gymnasium") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_gym = pytest.mark.skipif(not HAS_GYM, reason='needs gymnasium: pip install -e ".[rl]"')
needs_matplotlib = pytest.mark.skipif(not HAS_MATPLOTLIB, reason='needs matplotlib: pip install -e ".[plot]"')


# --------------------------------------------------------------------------- returns and the solved bar
def test_discounted_returns_by_hand():
    # G_2 = 3, G_1 = 2 + 0.5·3 = 3.5, G_0 = 1 + 0.5·3.5 = 2.75
    np.testing.assert_allclose(rl.discounted_returns([1.0, 2.0, 3.0], 0.5), [2.75, 3.5, 3.0])
    # CartPole's reward is 1 per step: with γ = 1, G_t counts the steps left
    np.testing.assert_array_equal(rl.discounted_returns([1.0] * 4, 1.0), [4, 3, 2, 1])
    np.testing.assert_array_equal(rl.discounted_returns([5.0, 7.0], 0.0), [5, 7])  # γ = 0: the reward alone
    assert rl.discounted_returns([], 0.99).shape == (0,)


def test_solved_needs_100_episodes_averaging_475():
    assert not rl.solved([500.0] * 99)                      # too few episodes, however good
    assert rl.solved([0.0] * 50 + [475.0] * 100)            # only the last 100 count
    assert not rl.solved([475.0] * 99 + [474.0])            # mean 474.99
    np.testing.assert_allclose(rl.running_mean([2.0, 4.0, 6.0], window=2), [2.0, 3.0, 5.0])


# --------------------------------------------------------------------------- the policy gradient
def mlp_logits(states, w1, b1, w2, b2):
    """The policy network as functions of its weights, so gradcheck can vary them."""
    return F.linear(F.relu(F.linear(states, w1, b1)), w2, b2)


def policy_case(rng, steps, n_actions, n_states=4, hidden=7):
    states = rng.standard_normal((steps, n_states))
    weights = [rng.standard_normal((hidden, n_states)), rng.standard_normal(hidden),
               rng.standard_normal((n_actions, hidden)), rng.standard_normal(n_actions)]
    actions = rng.integers(0, n_actions, steps)
    returns = rl.discounted_returns(rng.random(steps) + 0.5, 0.9).astype(np.float64)
    advantages = returns - returns.mean()  # G − b with the mean as the baseline
    return states, weights, actions, advantages


@pytest.mark.parametrize("steps, n_actions", [(1, 2), (5, 2), (17, 3)])
def test_policy_gradient_loss_gradcheck(steps, n_actions):
    """−mean log π(a|s)·(G − b): its gradient w.r.t. every policy weight, against central differences."""
    states, weights, actions, advantages = policy_case(np.random.default_rng(steps), steps, n_actions)
    report = ln.gradcheck(lambda *w: rl.policy_gradient_loss(mlp_logits(states, *w), actions, advantages), *weights)
    assert report.passed, str(report)


def test_policy_gradient_of_the_logits_is_minus_onehot_minus_softmax_times_advantage():
    """∂loss/∂z_t = −(onehot(a_t) − softmax(z_t))·A_t / T: the score function of a softmax policy."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 3))
    actions, advantages = rng.integers(0, 3, 6), rng.standard_normal(6)
    z = ln.tensor(logits, requires_grad=True)
    rl.policy_gradient_loss(z, actions, advantages).backward()
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(z.grad, -(np.eye(3)[actions] - softmax) * advantages[:, None] / 6, rtol=1e-12)


@pytest.mark.parametrize("steps, n_actions", [(1, 2), (9, 2), (16, 5)])
def test_policy_gradient_loss_matches_pytorch(steps, n_actions):
    torch = pytest.importorskip("torch")
    states, weights, actions, advantages = policy_case(np.random.default_rng(10 + steps), steps, n_actions)
    ours = [ln.tensor(w, requires_grad=True) for w in weights]
    loss = rl.policy_gradient_loss(mlp_logits(states, *ours), actions, advantages)
    loss.backward()
    theirs = [torch.tensor(w, requires_grad=True) for w in weights]
    hidden = torch.relu(torch.tensor(states) @ theirs[0].T + theirs[1])
    log_probs = torch.log_softmax(hidden @ theirs[2].T + theirs[3], dim=-1)
    chosen = log_probs.gather(1, torch.tensor(actions)[:, None]).squeeze(1)
    loss_t = -(chosen * torch.tensor(advantages)).mean()
    loss_t.backward()
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=1e-12)
    for ours_w, theirs_w in zip(ours, theirs):
        np.testing.assert_allclose(ours_w.grad, theirs_w.grad.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- DQN's pieces
def test_td_target_by_hand():
    rewards = np.array([1.0, 1.0, 1.0], np.float32)
    next_q = np.array([[1.0, 3.0], [2.0, 0.0], [5.0, 5.0]], np.float32)
    terminated = np.array([0.0, 1.0, 0.0], np.float32)
    # y = r + γ·max Q' where the episode goes on; r alone where s' is terminal
    np.testing.assert_allclose(rl.td_target(rewards, next_q, terminated, 0.9), [1 + 0.9 * 3, 1, 1 + 0.9 * 5],
                               rtol=1e-6)


def test_dqn_update_fits_the_taken_action_only_and_leaves_the_target_alone():
    ln.seed(0)
    q_net, target = rl.mlp(4, 8, 2, dtype=np.float64), rl.mlp(4, 8, 2, dtype=np.float64)
    target_before = target.state_dict()
    rng = np.random.default_rng(1)
    batch = (rng.standard_normal((5, 4)), np.array([0, 1, 1, 0, 1]), np.ones(5), rng.standard_normal((5, 4)),
             np.array([0.0, 0.0, 1.0, 0.0, 0.0]))
    y = rl.td_target(batch[2], target(batch[3]).data, batch[4], 0.99)
    q_before = q_net(batch[0]).data
    expected = np.mean((q_before[np.arange(5), batch[1]] - y) ** 2)
    opt = ln.optim.SGD(q_net.parameters(), lr=1e-3)
    loss = rl.dqn_update(q_net, target, opt, batch, 0.99, grad_clip=1e9)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(value, target_before[name])
    # a small step along −∇ lowers the loss
    after = np.mean((q_net(batch[0]).data[np.arange(5), batch[1]] - y) ** 2)
    assert after < expected


def test_dqn_loss_gradcheck():
    """mean (Q(s, a) − y)² w.r.t. the Q-network's weights, y constant: Q(s, a) picked by integer indexing."""
    rng = np.random.default_rng(2)
    states, weights, actions, _ = policy_case(rng, 7, 3)
    y = rng.standard_normal(7)
    report = ln.gradcheck(lambda *w: F.mse_loss(mlp_logits(states, *w)[np.arange(7), actions], y), *weights)
    assert report.passed, str(report)


def test_replay_buffer_keeps_the_last_capacity_transitions():
    buffer = rl.ReplayBuffer(3, state_size=2)
    for i in range(5):
        buffer.push(np.full(2, i), i % 2, float(i), np.full(2, i + 1), i == 4)
    assert len(buffer) == 3
    assert sorted(buffer.rewards) == [2.0, 3.0, 4.0]  # 0 and 1, the oldest, were overwritten
    states, actions, rewards, next_states, terminated = buffer.sample(50, np.random.default_rng(0))
    assert states.shape == next_states.shape == (50, 2) and states.dtype == np.float32
    assert set(rewards) == {2.0, 3.0, 4.0}  # every stored transition is drawn, nothing else
    np.testing.assert_array_equal(states[:, 0], rewards)  # the fields of one transition stay together
    np.testing.assert_array_equal(next_states[:, 0], rewards + 1)
    np.testing.assert_array_equal(actions, rewards.astype(int) % 2)
    np.testing.assert_array_equal(terminated, rewards == 4.0)


def test_replay_buffer_refuses_bad_use():
    with pytest.raises(ValueError, match="ReplayBuffer: capacity must be a positive int, got 0"):
        rl.ReplayBuffer(0, 4)
    with pytest.raises(ValueError, match="ReplayBuffer: cannot sample from an empty buffer"):
        rl.ReplayBuffer(4, 4).sample(2, np.random.default_rng(0))


def test_epsilon_schedule():
    config = rl.DQNConfig(eps_start=1.0, eps_end=0.1, eps_decay_steps=100)
    assert [config.epsilon(s) for s in (0, 50, 100, 10_000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


# --------------------------------------------------------------------------- a few episodes of each
FEW = {"reinforce": rl.ReinforceConfig(episodes=4),
       "dqn": rl.DQNConfig(episodes=4, learning_starts=20, batch_size=16, target_every=25)}


@needs_gym
@pytest.mark.parametrize("algo", ["reinforce", "dqn"])
def test_a_few_episodes_run_and_repeat_exactly(algo):
    first = rl.TRAINERS[algo](seed=3, config=FEW[algo])
    again = rl.TRAINERS[algo](seed=3, config=FEW[algo])
    other = rl.TRAINERS[algo](seed=4, config=FEW[algo])
    assert len(first.returns) == 4 and all(r >= 1 for r in first.returns) and first.solved_at is None
    assert first.updates == (4 if algo == "reinforce" else first.env_steps - FEW[algo].learning_starts + 1) > 0
    assert first.returns == again.returns  # seeded: the same returns, episode by episode
    for name, value in first.model.state_dict().items():
        np.testing.assert_array_equal(value, again.model.state_dict()[name])
    assert first.returns != other.returns
    assert f"{algo} seed 3: not solved in 4 episodes" in first.summary()


@needs_gym
def test_bad_settings_are_refused_before_any_episode():
    with pytest.raises(ValueError, match="reinforce: episodes must be a positive int, got 0"):
        rl.reinforce(config=rl.ReinforceConfig(episodes=0))
    with pytest.raises(ValueError, match=r"dqn: gamma must lie in \[0, 1\], got 1.5"):
        rl.dqn(config=rl.DQNConfig(gamma=1.5))
    with pytest.raises(ValueError, match="dqn: seed must be an int ≥ 0, got -1"):
        rl.dqn(seed=-1)


def test_without_gymnasium_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gymnasium", None)  # `import gymnasium` now fails
    with pytest.raises(ImportError, match=r'pip install -e "\.\[rl\]"'):
        rl.gymnasium()
    assert cli.main(["rl", "--episodes", "1"]) == 2


# --------------------------------------------------------------------------- the CLI and the plot
@pytest.mark.parametrize("argv, message", [
    (["rl", "--algo", "ppo"], "argument --algo: expected one of reinforce, dqn, got 'ppo'"),
    (["rl", "--episodes", "0"], "argument --episodes: expected an int >= 1, got '0'"),
    (["rl", "--seed", "-1"], "argument --seed: expected an int >= 0, got '-1'"),
    (["rl", "--backend", "cuda"], "argument --backend: expected one of"),
    (["rl", "--plot", "no/such/dir/returns.png"], "argument --plot: no/such/dir/returns.png: expected an existing "
                                                  "directory"),
])
def test_cli_refuses_bad_arguments(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def png_size(path):
    """(width, height) from a PNG's signature and IHDR chunk; fails on anything else."""
    with open(path, "rb") as f:
        data = f.read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@needs_matplotlib
def test_plot_is_a_png_of_800_by_450(tmp_path):
    path = tmp_path / "returns.png"
    rl.plot_returns(np.linspace(10, 500, 150), path)
    assert png_size(path) == (800, 450)


@needs_gym
@needs_matplotlib
def test_cli_run_plots_saves_and_the_saved_network_acts(tmp_path, capsys):
    plot, model = tmp_path / "returns.png", tmp_path / "policy.lnn"
    assert cli.main(["rl", "--algo", "reinforce", "--episodes", "3", "--seed", "1", "--plot", str(plot),
                     "--save", str(model)]) == 0
    out = capsys.readouterr().out
    assert "reinforce seed 1: not solved in 3 episodes" in out and "updates/s" in out
    assert png_size(plot) == (800, 450)
    network, config = rl.load_policy(model)
    assert config["rl_policy"] == "reinforce" and config["sizes"] == [4, 128, 2]
    assert rl.greedy_action(network, np.zeros(4, np.float32)) in (0, 1)
