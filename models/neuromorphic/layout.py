"""How windows are laid out in time for inference, identically for SLAYER (float) and Lava (fixed point).

Each window becomes ``LEAD`` silent steps, its ``T`` steps, then ``pad`` silent steps. netx resets
every neuron once per window, but a spike a hidden neuron emits in the window's last step still
reaches the output layer after the reset; the silent lead step absorbs it, and spikes in the lead
step are not counted. The trailing pad lets neurons still charged at the window's end finish firing.
"""

import numpy as np

LEAD = 1


def padded(spikes: np.ndarray, pad: int) -> np.ndarray:
    """(N, C, T) -> (N, C, LEAD + T + pad) float32."""
    n, c, t = spikes.shape
    out = np.zeros((n, c, LEAD + t + pad), dtype=np.float32)
    out[:, :, LEAD:LEAD + t] = spikes
    return out


def counted(per_step: np.ndarray) -> np.ndarray:
    """(N, K, L) spikes per step -> (N, K) counts, the lead step excluded."""
    return per_step[:, :, LEAD:].sum(-1)
