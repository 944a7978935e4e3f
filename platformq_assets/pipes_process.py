"""A Dagster Pipes subprocess with a time limit: PipesSubprocessClient, bounded.

PipesSubprocessClient has no timeout: a script that hangs (a Lava simulation, a Flower/Ray simulation) held its
step, its run and its tables' pool slots for ever. Here the script runs in a process group of its own (Lava's
runtime and Ray fork processes), and one still running after ``timeout_s``, or when the run is cancelled, is
stopped with all its children (SIGTERM, or SIGINT on a cancel, then SIGKILL after ``grace_s``); the step fails
saying so.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Failure


def _signal_group(process, sig) -> None:
    import os

    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):  # every process of the group has already exited
        pass


def _stop(process, sig, grace_s: float) -> None:
    """Signal the script's process group and give it ``grace_s`` to end (SIGKILL follows in run_bounded)."""
    import subprocess

    _signal_group(process, sig)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass


def run_bounded(context, command: list[str], *, cwd: Path | str, env: dict, extras: dict, timeout_s: float | None,
                grace_s: float = 20.0, what: str | None = None, timeout_hint: str = "timeout_seconds in the asset's "
                "run config"):
    """Run ``command`` through a Pipes session (temp-file context and messages, as PipesSubprocessClient does), with
    ``os.environ`` and ``env``; returns the completed invocation. ``timeout_s`` None: no limit."""
    import os
    import signal
    import subprocess

    from dagster import (
        DagsterExecutionInterruptedError,
        PipesClientCompletedInvocation,
        PipesTempFileContextInjector,
        PipesTempFileMessageReader,
        open_pipes_session,
    )

    what = what or " ".join(command[-2:])
    with open_pipes_session(context=context, context_injector=PipesTempFileContextInjector(),
                            message_reader=PipesTempFileMessageReader(), extras=extras) as session:
        process = subprocess.Popen(command, cwd=str(cwd), start_new_session=True,
                                   env={**os.environ, **env, **session.get_bootstrap_env_vars()})
        try:
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                context.log.error(f"{what} still running after {timeout_s:g} s: stopping it and its processes")
                _stop(process, signal.SIGTERM, grace_s)
                raise Failure(description=f"{what} did not finish within {timeout_s:g} s ({timeout_hint}) and was "
                              "stopped with its processes", metadata={"script": what, "timeout_seconds": timeout_s})
            except DagsterExecutionInterruptedError:
                context.log.info(f"[pipes] execution interrupted, sending SIGINT to {what} and its processes")
                _stop(process, signal.SIGINT, grace_s)
                raise
            if process.returncode != 0:
                raise Failure(description=f"{what} failed with exit code {process.returncode} (its error is in the "
                              "step's stderr)", metadata={"script": what, "exit_code": process.returncode})
        finally:
            _signal_group(process, signal.SIGKILL)  # whatever is left of it (stragglers, or after the grace time)
            process.wait()
    return PipesClientCompletedInvocation(session)
