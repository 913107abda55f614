"""REINFORCE with a learned baseline on Gymnasium's CartPole-v1, until solved (a mean return ≥ 475
over 100 consecutive episodes) or 2000 episodes. Needs the extra: pip install -e ".[rl]"
(and ".[plot]" for --plot).

    python examples/reinforce_cartpole.py [--seed 0] [--episodes 2000] [--plot returns.png]

The loop itself, a few dozen lines on lepton_nn.nn / optim / functional, is lepton_nn.rl.reinforce
(one episode with a ~ π(·|s), then rl.reinforce_update: −mean log π(a|s)·(G − b(s)) plus the
baseline's MSE, backward, Adam); the policy gradient is derived in docs/rl.md.
`lepton-nn rl --algo reinforce` runs the same with a progress bar.
"""
import argparse

from lepton_nn import rl

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--episodes", type=int, default=rl.ReinforceConfig.episodes)
parser.add_argument("--plot", help="write the returns to this PNG (needs matplotlib)")
args = parser.parse_args()

config = rl.ReinforceConfig(episodes=args.episodes)  # gamma 0.99, Adam lr 1e-3, 128 hidden units
run = rl.reinforce(seed=args.seed, config=config, progress=True)
print(run.summary())
if args.plot:
    rl.plot_returns(run.returns, args.plot, title=f"REINFORCE on CartPole-v1, seed {args.seed}")
    print(f"returns plotted to {args.plot}")
