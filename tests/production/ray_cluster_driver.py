"""Runs inside a private network namespace (only loopback): the platform's Tune search against a
two-node Ray cluster reached through RayResource(address=...), the production code path."""

import json
import sys

import numpy as np

from models.tabular import Split, search
from resources.compute import RayResource


def main(address: str) -> None:
    import ray

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 6))
    y = (x[:, 0] - x[:, 1] + rng.normal(size=1500) > 0).astype(int)
    split = Split(x[:1100], y[:1100], x[1100:], y[1100:])
    with RayResource(address=address).session() as cluster:
        nodes = [n for n in ray.nodes() if n["Alive"]]

        @ray.remote(num_cpus=1)
        def where() -> str:
            import time

            time.sleep(0.3)  # long enough that one CPU per node cannot take them all
            return ray.get_runtime_context().get_node_id()

        used = set(ray.get([where.options(scheduling_strategy="SPREAD").remote() for _ in range(8)]))
        result = search(split, num_samples=4, storage_path=sys.argv[2])
    print(json.dumps({"nodes": len(nodes), "addresses": sorted({n["NodeManagerAddress"] for n in nodes}),
                      "cpus": cluster["resources"].get("CPU"), "nodes_used": len(used),
                      "trials": len(result["trials"]), "best_score": result["best_score"]}))


if __name__ == "__main__":
    main(sys.argv[1])
