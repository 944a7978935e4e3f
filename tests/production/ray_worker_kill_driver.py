"""Inside the namespace: a Tune search on the 2-node cluster while the worker node is killed with
SIGKILL part-way; trials lost with it are retried on the head (FailureConfig), and a second search
afterwards succeeds on what is left. Prints one JSON line."""

import json
import subprocess
import sys
import threading
import time

import numpy as np

from models.tabular import Split, search
from resources.compute import RayResource


def main(address: str, storage: str) -> None:
    import ray

    rng = np.random.default_rng(1)
    x = rng.normal(size=(6000, 8))
    y = (x[:, 0] + x[:, 2] + rng.normal(size=6000) > 0).astype(int)
    split = Split(x[:4500], y[:4500], x[4500:], y[4500:])
    killed = {}

    def kill_worker():
        time.sleep(6)  # trials are running on both nodes by now
        out = subprocess.run(["pkill", "-9", "-f", "node_manager_port=6391"], capture_output=True)
        killed["rc"] = out.returncode
        killed["at"] = time.time()

    with RayResource(address=address).session():
        threading.Thread(target=kill_worker, daemon=True).start()
        first = search(split, num_samples=6, storage_path=f"{storage}/first", max_failures=3)
        # the GCS marks a node dead only after its health checks fail for a while; when the search ends
        # quickly after the kill, the killed node can still be listed alive, so wait for the verdict
        deadline = time.time() + 120
        while (alive := len([n for n in ray.nodes() if n["Alive"]])) > 1 and time.time() < deadline:
            time.sleep(1)
        second = search(split, num_samples=2, storage_path=f"{storage}/second")
    print(json.dumps({"killed": killed.get("rc"), "first_trials": len(first["trials"]),
                      "first_failed": first["failed_trials"], "alive_after": alive,
                      "second_trials": len(second["trials"]), "best": first["best_score"]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
