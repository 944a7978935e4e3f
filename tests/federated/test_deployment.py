"""``run_on_superlink`` with the ``flwr`` CLI faked: how long it waits for a run and what it does when it gives up."""

import json
import subprocess

import pytest

from models.federated import deployment


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_a_run_given_up_on_waits_as_long_as_its_rounds_allow_and_is_stopped(tmp_path, monkeypatch):
    """The wait was a fixed 1800 s although 10 rounds of 300 s may take longer, and on giving up the run went on on
    the SuperLink (training on the tenants' exported files the asset then deleted)."""
    clock = Clock()
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command[1:3])
        out = ""
        if command[1] == "run":
            out = json.dumps({"run-id": 42})
        elif command[1] == "ls":
            out = json.dumps({"runs": [{"status": "running"}]})
        return subprocess.CompletedProcess(command, 0, out, "")

    class Streamer:
        def __init__(self, command, **kwargs):
            pass

        def wait(self, timeout=None):
            if timeout is None:
                return 0
            clock.now += timeout
            raise subprocess.TimeoutExpired("flwr log", timeout)

        def kill(self):
            pass

    monkeypatch.setattr(deployment, "time", clock)
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(subprocess, "Popen", Streamer)
    config = {"dataset": "npz", "data-dir": str(tmp_path / "data"), "output-dir": str(tmp_path / "out"),
              "num-rounds": 10, "round-timeout": 300.0}
    with pytest.raises(TimeoutError, match="run 42 did not finish.*stopped"):
        deployment.run_on_superlink(config, "127.0.0.1:1", workdir=tmp_path / "work", log=lambda _: None)
    # 10 rounds of training and evaluation, each waiting up to 300 s for replies (plus discovery)
    assert clock.now >= 10 * 2 * 300
    assert ["stop", "42"] in calls


@pytest.mark.parametrize("failure", ["ls hangs", "interrupted"])
def test_a_wait_ended_by_anything_else_stops_the_run_too(tmp_path, monkeypatch, failure):
    """Only the deadline stopped the run: a `flwr ls` that timed out, or the step interrupted while waiting, left
    it training on the SuperLink while the asset removed its files."""
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command[1:3])
        if command[1] == "run":
            return subprocess.CompletedProcess(command, 0, json.dumps({"run-id": 7}), "")
        if command[1] == "ls":
            raise subprocess.TimeoutExpired(command, 60) if failure == "ls hangs" else KeyboardInterrupt()
        return subprocess.CompletedProcess(command, 0, "", "")

    class Streamer:  # the stream ends at once (a dropped connection): the status decides
        def __init__(self, command, **kwargs):
            pass

        def wait(self, timeout=None):
            return 0

        def kill(self):
            pass

    clock = Clock()
    monkeypatch.setattr(deployment, "time", clock)
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(subprocess, "Popen", Streamer)
    config = {"dataset": "npz", "data-dir": str(tmp_path / "data"), "output-dir": str(tmp_path / "out"),
              "num-rounds": 1, "round-timeout": 30.0}
    with pytest.raises(TimeoutError if failure == "ls hangs" else KeyboardInterrupt):
        deployment.run_on_superlink(config, "127.0.0.1:1", workdir=tmp_path / "work", log=lambda _: None)
    assert ["stop", "7"] in calls
