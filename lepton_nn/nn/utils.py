"""torch.nn.utils's name for gradient clipping; it lives in lepton_nn.optim."""
from lepton_nn.optim import clip_grad_norm_  # noqa: F401
