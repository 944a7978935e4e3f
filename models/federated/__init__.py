"""Federated learning on Flower's Message API (ServerApp / ClientApp), free of Dagster.

* ``config``      – the flat run configuration (Flower ``run_config`` keys) and its typed view;
* ``data``        – participant datasets: scikit-learn digits (IID / Dirichlet splits) or
  per-tenant ``.npz`` files written by the platform;
* ``model``       – the small torch MLP and ArrayRecord <-> tensor helpers;
* ``training``    – local SGD with FedProx's proximal term, SCAFFOLD's correction and
  Opacus DP-SGD with a per-participant RDP accountant;
* ``strategies``  – FedAvg / FedProx / SCAFFOLD with participant discovery, suspension,
  update screening, minimum participants and ε budgets;
* ``client_app`` / ``server_app`` – the Flower apps; ``simulation`` runs them on the
  simulation engine, ``deployment`` against a SuperLink; ``secagg`` is the SecAgg+ variant.

Heavy libraries (torch, opacus, flwr) are imported by these modules at the top: nothing
in the Dagster code location imports them at load time.
"""
