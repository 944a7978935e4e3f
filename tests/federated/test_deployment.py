"""The production path: a SuperLink and three SuperNodes as separate processes on 127.0.0.1, and the
same ServerApp submitted with ``flwr run`` (the app's code comes from the project, nothing is
installed at run time)."""

import socket

import pytest

from models.federated.deployment import LoopbackFederation, run_on_superlink


@pytest.mark.slow
def test_superlink_and_three_supernodes_run_the_server_app_to_completion(tmp_path):
    with LoopbackFederation(tmp_path / "federation", num_nodes=3) as federation:
        for port in federation.ports.values():  # every API listens on loopback only
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) == 0
        assert len(federation.processes) == 4 and all(p.poll() is None for p, _ in federation.processes)
        history = run_on_superlink({"strategy": "fedavg", "num-rounds": 2, "lr": 0.5, "local-epochs": 2},
                                   federation.control_address, workdir=tmp_path / "run", timeout=300)
    assert history["status"] == "finished:completed"
    rounds = {r["round"]: r for r in history["rounds"]}
    assert history["participants"] == ["p0", "p1", "p2"]  # from each SuperNode's --node-config partition-id
    assert rounds[1]["accepted"] == rounds[2]["accepted"] == ["p0", "p1", "p2"]
    assert rounds[2]["server_accuracy"] > rounds[0]["server_accuracy"] + 0.4
