"""Spiking anomaly detection with lava-dl (runs in the Python 3.10 side environment, ``.venv-lava``).

* ``encoding``   per-instrument order and trade events -> spike trains over fixed time bins
                 (delta modulation of price, threshold/population coding of volume, order flow,
                 cancellations and order-flow imbalance), windows labelled from the simulation's
                 injected anomalies. numpy only: importable from either environment.
* ``network``    the SLAYER network (two CUBA-LIF dense blocks), its training and netx HDF5 export.
* ``inference``  the exported network on Lava (``Loihi2SimCfg(select_tag='fixed_pt')`` on the CPU,
                 or ``Loihi2HwCfg`` on Loihi 2 hardware, which is configured but untested here).
* ``baseline``   the non-spiking baselines (small MLP, IsolationForest) on the same windows.
* ``metrics``    precision/recall, float-vs-fixed-point agreement, synaptic-op/spike counts.
* ``pipes_*``    the entry scripts Dagster Pipes launches; the only modules that import dagster_pipes.

Nothing here imports Dagster.
"""
