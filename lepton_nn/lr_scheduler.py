"""Learning-rate schedules, as torch.optim.lr_scheduler (also reachable as optim.lr_scheduler).

    opt = optim.AdamW(model.parameters(), lr=1e-3)
    sched = optim.lr_scheduler.WarmupCosineLR(opt, warmup_iters=100, decay_iters=2000, min_lr=1e-4)
    for x, y in batches:
        ...; opt.step()
        sched.step()       # after opt.step(), as in PyTorch: the next step uses lr(t + 1)

A schedule sets every parameter group's lr from its initial lr η₀ (kept in the group as
'initial_lr', as PyTorch does) and the count t of scheduler.step() calls; making the scheduler
sets lr(0). Each lr is a closed form f(η₀, t) (PyTorch computes most of them recursively, the
same values to rounding), so a run resumed from state_dict() continues exactly. The new lr is
checked like any hyperparameter (the optimizer's rules), so a schedule giving NaN raises.
Formulas: docs/equations.md, "Learning-rate schedules".
"""
import math


class LRScheduler:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1  # PyTorch's name for t, the number of step() calls
        self.step()

    def lr_at(self, base_lr, t, group_index):
        """The learning rate at step t of a group whose initial lr is base_lr."""
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        for i, (group, base_lr) in enumerate(zip(self.optimizer.param_groups, self.base_lrs)):
            group["lr"] = self.lr_at(base_lr, self.last_epoch, i)

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        """t, the initial lrs and the settings: not the optimizer, nor LambdaLR's functions (code is
        not state; PyTorch leaves lambdas out too)."""
        return {k: v for k, v in vars(self).items() if k not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict):
        vars(self).update(state_dict)


class LambdaLR(LRScheduler):
    """lr(t) = η₀·λ(t), λ a function of t (or one per parameter group)."""

    def __init__(self, optimizer, lr_lambda):
        n = len(optimizer.param_groups)
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(self.lr_lambdas) != n:
            raise ValueError(f"LambdaLR: {len(self.lr_lambdas)} functions for {n} parameter groups")
        super().__init__(optimizer)

    def lr_at(self, base_lr, t, group_index):
        return base_lr * self.lr_lambdas[group_index](t)


class LinearLR(LRScheduler):
    """lr(t) = η₀·(s + (e − s)·min(t, T)/T): from s·η₀ to e·η₀ in T steps, then constant."""

    def __init__(self, optimizer, start_factor=1 / 3, end_factor=1.0, total_iters=5):
        if not (0 < start_factor <= 1 and 0 <= end_factor <= 1) or total_iters < 1:
            raise ValueError(f"LinearLR: need 0 < start_factor ≤ 1, 0 ≤ end_factor ≤ 1 and total_iters ≥ 1, got "
                             f"{start_factor}, {end_factor}, {total_iters}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer)

    def lr_at(self, base_lr, t, group_index):
        s, e = self.start_factor, self.end_factor
        return base_lr * (s + (e - s) * min(t, self.total_iters) / self.total_iters)


class CosineAnnealingLR(LRScheduler):
    """lr(t) = η_min + (η₀ − η_min)·(1 + cos(π·t/T_max))/2: half a cosine from η₀ down to η_min
    at t = T_max (beyond it the cosine rises again, as PyTorch's)."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be ≥ 1, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def lr_at(self, base_lr, t, group_index):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class WarmupCosineLR(LRScheduler):
    """Linear warm-up, then cosine decay to min_lr, then min_lr (nanoGPT's schedule):

        lr(t) = η₀·(t + 1)/(W + 1)                                    t < W
              = min_lr + (η₀ − min_lr)·(1 + cos(π·(t − W)/(D − W)))/2    W ≤ t ≤ D
              = min_lr                                                t > D

    W = warmup_iters, D = decay_iters. The warm-up never gives lr 0 (a wasted step) and meets
    the cosine at η₀; in PyTorch it is SequentialLR(LinearLR(start_factor=1/(W + 1), total_iters=W),
    CosineAnnealingLR(T_max=D − W, eta_min=min_lr), milestones=[W]) up to t = D.
    """

    def __init__(self, optimizer, warmup_iters, decay_iters, min_lr=0.0):
        if not 0 <= warmup_iters < decay_iters:
            raise ValueError(f"WarmupCosineLR: need 0 ≤ warmup_iters < decay_iters, got {warmup_iters}, {decay_iters}")
        self.warmup_iters, self.decay_iters, self.min_lr = warmup_iters, decay_iters, min_lr
        super().__init__(optimizer)

    def lr_at(self, base_lr, t, group_index):
        w, d = self.warmup_iters, self.decay_iters
        if t < w:
            return base_lr * (t + 1) / (w + 1)
        if t > d:
            return self.min_lr
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * (t - w) / (d - w))) / 2
