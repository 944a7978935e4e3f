"""The production path: a SuperLink and three SuperNodes as separate processes on 127.0.0.1, and the
same ServerApp submitted with ``flwr run`` (the app's code comes from the project, nothing is
installed at run time)."""

import socket

import pytest

from models.federated.data import digits_partition, write_participant_files
from models.federated.deployment import LoopbackFederation, run_on_superlink


@pytest.mark.slow
def test_superlink_and_three_supernodes_run_the_server_app_to_completion(tmp_path):
    # each SuperNode reads only its own partition file (named by its --node-config partition-id)
    write_participant_files(tmp_path / "data", [digits_partition(i, 3, "iid", 0.3, 0) for i in range(3)], 10)
    federation = LoopbackFederation(tmp_path / "federation", num_nodes=3,
                                    node_config={"dataset": "npz", "data-dir": str(tmp_path / "data")})
    with federation:
        for port in federation.ports.values():  # every API listens on loopback only
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) == 0
        assert len(federation.processes) == 4 and all(p.poll() is None for p, _ in federation.processes)
        # the server evaluates on the held-out digits test set; no federated-evaluation phase (each
        # phase costs a ClientApp process per node here)
        history = run_on_superlink({"strategy": "fedavg", "num-rounds": 1, "lr": 0.5, "local-epochs": 3,
                                    "client-evaluation": False},
                                   federation.control_address, workdir=tmp_path / "run", timeout=300)
    assert history["status"] == "finished:completed"
    rounds = {r["round"]: r for r in history["rounds"]}
    assert history["participants"] == ["p0", "p1", "p2"]  # from each SuperNode's --node-config partition-id
    assert rounds[1]["accepted"] == ["p0", "p1", "p2"]
    assert rounds[1]["server_accuracy"] > rounds[0]["server_accuracy"] + 0.4
