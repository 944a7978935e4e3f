"""The exported network on Lava: netx HDF5 -> process graph -> Loihi 2 run configuration.

Windows are streamed back to back (laid out as in ``layout``: a silent lead step, the window, ``pad``
silent steps) and netx resets every neuron once per window, so one Lava run scores a whole day. Backends:

* ``loihi2_sim`` (default): ``Loihi2SimCfg(select_tag='fixed_pt')``, the bit-accurate fixed-point
  CPU simulation of Loihi 2 neurons and synapses (what runs here and in the lava image);
* ``loihi2_hw``: ``Loihi2HwCfg`` on a Loihi 2 system (Intel INRC, lava-loihi installed, SLURM
  partition). Host <-> chip spikes then go through lava-loihi's embedded IO adapters. This path is
  written after the Lava documentation but has never been run here: no Loihi hardware is available.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# Lava's runtime pins multiprocessing to "fork" when it is first imported; import it before anything
# (scikit-learn/joblib, torch) picks a start method, or that import fails.
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401,E402

from models.neuromorphic import layout  # noqa: E402

BACKENDS = ("loihi2_sim", "loihi2_hw")


def run_config(backend: str, partition: str | None = None):
    if backend == "loihi2_sim":
        from lava.magma.core.run_configs import Loihi2SimCfg

        return Loihi2SimCfg(select_tag="fixed_pt")
    if backend == "loihi2_hw":
        try:
            from lava.utils import loihi

            loihi.use_slurm_host(partition=partition)  # raises ImportError without lava-loihi
        except ImportError as error:
            raise RuntimeError("backend loihi2_hw needs Intel's lava-loihi package and access to a Loihi 2 "
                               "system (INRC); it is not installed in this environment") from error
        from lava.magma.core.run_configs import Loihi2HwCfg

        return Loihi2HwCfg()
    raise ValueError(f"unknown lava backend {backend!r}; choose one of {BACKENDS}")


def stream(spikes: np.ndarray, pad: int) -> np.ndarray:
    """(N, C, T) windows -> one (C, N * L) spike stream, L = LEAD + T + pad (see ``layout``)."""
    windows = layout.padded(spikes, pad)
    n, c, length = windows.shape
    return windows.transpose(1, 0, 2).reshape(c, n * length)


def per_window(data: np.ndarray, n: int, length: int) -> np.ndarray:
    """(K, N * L) sink buffer -> (N, K) spike counts per window (lead step excluded)."""
    return layout.counted(data.reshape(data.shape[0], n, length).transpose(1, 0, 2))


def run_lava(network_path: Path, spikes: np.ndarray, pad: int = 2, backend: str = "loihi2_sim",
             partition: str | None = None) -> dict:
    """Run every window through the netx network on Lava; counts per window and timings."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc import io

    # the run configuration first: the hardware backend's IO adapters come with lava-loihi, so without it the
    # graph cannot be built, and run_config says what is missing
    config = run_config(backend, partition)
    n, _, t = spikes.shape
    length = layout.LEAD + t + pad
    steps = n * length
    started = time.perf_counter()
    net = netx.hdf5.Network(net_config=str(network_path), reset_interval=length)
    data = stream(spikes, pad)
    source = io.source.RingBuffer(data=data)
    out_sink = io.sink.RingBuffer(shape=net.out.shape, buffer=steps)
    hidden_sink = io.sink.RingBuffer(shape=net.layers[0].out.shape, buffer=steps)
    if backend == "loihi2_hw":
        from lava.proc.embedded_io.spike import NxToPyAdapter, PyToNxAdapter

        to_chip, from_chip, from_hidden = (PyToNxAdapter(shape=net.inp.shape), NxToPyAdapter(shape=net.out.shape),
                                           NxToPyAdapter(shape=net.layers[0].out.shape))
        source.s_out.connect(to_chip.inp)
        to_chip.out.connect(net.inp)
        net.out.connect(from_chip.inp)
        from_chip.out.connect(out_sink.a_in)
        net.layers[0].out.connect(from_hidden.inp)
        from_hidden.out.connect(hidden_sink.a_in)
    else:
        source.s_out.connect(net.inp)
        net.out.connect(out_sink.a_in)
        net.layers[0].out.connect(hidden_sink.a_in)
    built = time.perf_counter()
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=config)
        ran = time.perf_counter()
        out = out_sink.data.get()
        hidden = hidden_sink.data.get()
    finally:
        net.stop()
    return {
        "out_counts": per_window(out, n, length).astype(np.int64),
        "hidden_counts": per_window(hidden, n, length).sum(1).astype(np.int64),
        "steps": steps, "build_seconds": built - started, "run_seconds": ran - built,
        "total_seconds": time.perf_counter() - started, "backend": backend,
        "layers": str(net).strip(),
    }
