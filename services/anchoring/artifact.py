"""The AnchorRegistry contract: its committed build artifact and how to rebuild it.

The compiled bytecode and ABI are committed (``contracts/AnchorRegistry.json``)
so deploying needs no compiler. The artifact is a reproducible build: compiling
``contracts/AnchorRegistry.vy`` with the recorded vyper version gives the same
bytes (the tests check it), and the bytecode's metadata trailer embeds an
integrity hash of the source, so a changed source cannot hide behind an old
artifact.

Compiler settings live in the source's pragmas (version, optimisation, EVM
version), not in code here, so any vyper front end builds the same thing.

Regenerate after editing the source:  python -m services.anchoring.artifact
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CONTRACT_NAME = "AnchorRegistry"
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
SOURCE_PATH = CONTRACTS_DIR / f"{CONTRACT_NAME}.vy"
ARTIFACT_PATH = CONTRACTS_DIR / f"{CONTRACT_NAME}.json"
# The path handed to the compiler; fixed so the build never depends on where the checkout lives.
COMPILER_CONTRACT_PATH = f"{CONTRACT_NAME}.vy"


@dataclass(frozen=True)
class ContractArtifact:
    contract_name: str
    compiler_version: str
    compiler_build: str  # e.g. "0.4.3+commit.bff19ea2"
    source_sha256: str
    abi: list
    bytecode: bytes  # init code, as sent in the deploy transaction
    bytecode_runtime: bytes  # code stored on chain, before the immutables appended at deploy

    def to_json_dict(self) -> dict:
        return {
            "contract_name": self.contract_name,
            "compiler": {"name": "vyper", "version": self.compiler_version, "build": self.compiler_build},
            "source": f"{self.contract_name}.vy",
            "source_sha256": self.source_sha256,
            "abi": self.abi,
            "bytecode": "0x" + self.bytecode.hex(),
            "bytecode_runtime": "0x" + self.bytecode_runtime.hex(),
        }

    @classmethod
    def from_json_dict(cls, data: dict) -> ContractArtifact:
        return cls(
            contract_name=data["contract_name"],
            compiler_version=data["compiler"]["version"],
            compiler_build=data["compiler"]["build"],
            source_sha256=data["source_sha256"],
            abi=data["abi"],
            bytecode=bytes.fromhex(data["bytecode"].removeprefix("0x")),
            bytecode_runtime=bytes.fromhex(data["bytecode_runtime"].removeprefix("0x")),
        )


def source_text() -> str:
    return SOURCE_PATH.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def load_artifact() -> ContractArtifact:
    """The committed artifact (no compiler needed)."""
    return ContractArtifact.from_json_dict(json.loads(ARTIFACT_PATH.read_text(encoding="utf-8")))


def compile_registry(source: str | None = None) -> ContractArtifact:
    """Compile the contract with the installed vyper (imported only here)."""
    import vyper
    from vyper.compiler import compile_code

    source = source_text() if source is None else source
    out = compile_code(
        source,
        contract_path=COMPILER_CONTRACT_PATH,
        output_formats=["abi", "bytecode", "bytecode_runtime"],
    )
    return ContractArtifact(
        contract_name=CONTRACT_NAME,
        compiler_version=vyper.__version__,
        compiler_build=getattr(vyper, "__long_version__", vyper.__version__),
        source_sha256=hashlib.sha256(source.encode("utf-8")).hexdigest(),
        abi=out["abi"],
        bytecode=bytes.fromhex(out["bytecode"].removeprefix("0x")),
        bytecode_runtime=bytes.fromhex(out["bytecode_runtime"].removeprefix("0x")),
    )


def write_artifact(artifact: ContractArtifact, path: Path = ARTIFACT_PATH) -> None:
    path.write_text(json.dumps(artifact.to_json_dict(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    built = compile_registry()
    write_artifact(built)
    print(f"wrote {ARTIFACT_PATH} (vyper {built.compiler_version}, {len(built.bytecode)} bytes of init code)")
