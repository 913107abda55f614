"""DQN (replay buffer, target network, ε-greedy) on Gymnasium's CartPole-v1, until solved (a mean
return ≥ 475 over 100 consecutive episodes) or 1000 episodes. Needs the extra:
pip install -e ".[rl]" (and ".[plot]" for --plot).

    python examples/dqn_cartpole.py [--seed 0] [--episodes 1000] [--plot returns.png]

The loop itself, a few dozen lines on lepton_nn.nn / optim / functional, is lepton_nn.rl.dqn
(act ε-greedily, store the transition, rl.dqn_update on a replayed batch: (Q(s, a) − y)² with
y = r + γ·max Q_target(s', ·), backward, clipping, Adam; copy into the target network every
500 steps); the loss and the target network are explained in docs/rl.md.
`lepton-nn rl --algo dqn` runs the same with a progress bar.
"""
import argparse

from lepton_nn import rl

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--episodes", type=int, default=rl.DQNConfig.episodes)
parser.add_argument("--plot", help="write the returns to this PNG (needs matplotlib)")
args = parser.parse_args()

config = rl.DQNConfig(episodes=args.episodes)  # the hyperparameters: lepton_nn/rl.py, DQNConfig
run = rl.dqn(seed=args.seed, config=config, progress=True)
print(run.summary())
if args.plot:
    rl.plot_returns(run.returns, args.plot, title=f"DQN on CartPole-v1, seed {args.seed}")
    print(f"returns plotted to {args.plot}")
