"""Running the chain environment (``.venv-chain``) from the main one: its interpreter, and the environment that
tells it which chain to use (``services.anchoring.configured``). The private key travels only in a child
process's environment: never in Pipes' context file, never in a run's event log."""

import json
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def chain_python() -> Path:
    return PROJECT_ROOT / ".venv-chain" / "bin" / "python"


def require_chain_python() -> Path:
    python = chain_python()
    if not python.exists():
        raise RuntimeError(f"the chain environment is missing ({python}); create it with `make setup`")
    return python


def chain_env(settings) -> dict[str, str]:
    """The chain settings for a child process (an empty value: unset, so the parent's own variables cannot leak
    a different chain in)."""
    return {
        "PYTHONPATH": str(PROJECT_ROOT),
        "PLATFORMQ_CHAIN_ID": str(settings.chain_id),
        "PLATFORMQ_CHAIN_RPC_URL": settings.chain_rpc_url or "",
        "PLATFORMQ_CHAIN_PRIVATE_KEY": settings.chain_private_key or "",
        "PLATFORMQ_CHAIN_REGISTRY": settings.chain_registry or "",
    }


class ChainCommandError(RuntimeError):
    pass


def run_chain_command(settings, command: str, payload=None, timeout_s: float = 600):
    """``python -m services.anchoring.cli COMMAND`` in the chain environment; its JSON answer."""
    import os

    done = subprocess.run(
        [str(require_chain_python()), "-m", "services.anchoring.cli", command], cwd=PROJECT_ROOT,
        input=json.dumps(payload) if payload is not None else "", capture_output=True, text=True,
        timeout=timeout_s, env={**os.environ, **chain_env(settings)})
    if done.returncode != 0:
        from services.anchoring.configured import redact_rpc_url

        message = done.stderr.strip().splitlines()
        # the CLI redacts the RPC URL (a provider's API key in its path or query) already; a crash before its
        # handler (a traceback's last line) may not have
        raise ChainCommandError(redact_rpc_url(message[-1], settings.chain_rpc_url) if message
                                else f"exit status {done.returncode}")
    return json.loads(done.stdout)
