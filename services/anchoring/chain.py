"""Chains that can hold an AnchorRegistry: one interface, an in-process EVM, real JSON-RPC nodes.

``ChainAdapter`` is what the anchoring domain needs from a chain. Both concrete
adapters share ``Web3ChainAdapter``, which signs every transaction locally with
its private key and sends it raw (``eth_sendRawTransaction``): the in-process
chain therefore runs the very transaction-building code a real chain gets.

- ``InProcessEthereumChain``: py-evm through eth-tester and web3's
  ``EthereumTesterProvider``; no process, no port. Its chain id is configurable
  so two instances are two distinct chains.
- ``JsonRpcChain``: any EVM node over HTTP(S), from a URL and a private key.

web3, eth-tester and py-evm are imported here only; the Merkle and anchoring
modules never need them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from services.anchoring.artifact import load_artifact

DEFAULT_IN_PROCESS_CHAIN_ID = 1337
MAX_BATCH_ID_BYTES = 64  # String[64] in the contract
IMMUTABLES_SIZE = 32  # the registry's one immutable (owner), appended to its runtime code
DEFAULT_PRIORITY_FEE_WEI = 10**9


class ChainError(RuntimeError):
    """A chain refused or failed an operation."""


class AnchorRejected(ChainError):
    """The registry reverted: not the owner, root already anchored, empty root."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ChainIdMismatch(ChainError):
    """The node reports another chain than the one the adapter was configured for."""


class TransactionsPending(ChainError):
    """The account has transactions sent and not yet mined: one may be the anchoring of a run whose receipt was
    lost (a node blip, a fee spike), which would still land; another anchoring now would revert behind it."""


@dataclass(frozen=True)
class BlockInfo:
    number: int
    hash: str  # 0x-prefixed
    timestamp: int


@dataclass(frozen=True)
class AnchorReceipt:
    root: bytes
    batch_id: str
    contract_address: str
    tx_hash: str  # 0x-prefixed
    block_number: int
    timestamp: int  # of the anchoring block, as stored by the contract
    gas_used: int


@dataclass(frozen=True)
class AnchorRecord:
    root: bytes
    batch_id: str
    timestamp: int
    block_number: int


@dataclass(frozen=True)
class TransactionInfo:
    tx_hash: str
    block_number: int
    sender: str
    to: str | None
    succeeded: bool


class ChainAdapter(ABC):
    """What anchoring needs from a chain. Addresses are checksummed 0x strings."""

    @property
    @abstractmethod
    def chain_id(self) -> int: ...

    @property
    @abstractmethod
    def account(self) -> str:
        """The address that signs this adapter's transactions."""

    @abstractmethod
    def deploy_registry(self) -> str:
        """Deploy an AnchorRegistry owned by ``account``; returns its address."""

    @abstractmethod
    def anchor_root(self, contract_address: str, root: bytes, batch_id: str) -> AnchorReceipt:
        """Anchor a 32-byte root; raises AnchorRejected if the registry reverts."""

    @abstractmethod
    def get_anchor(self, contract_address: str, root: bytes) -> AnchorRecord | None:
        """The registry's record of ``root``, or None when it is not anchored there."""

    @abstractmethod
    def find_anchor_receipt(self, contract_address: str, root: bytes) -> AnchorReceipt | None:
        """The receipt of the transaction that anchored ``root`` in the registry, or None when it is not anchored."""

    @abstractmethod
    def is_registry(self, contract_address: str) -> bool:
        """Whether the code at the address is exactly our AnchorRegistry."""

    @abstractmethod
    def get_transaction(self, tx_hash: str) -> TransactionInfo | None:
        """A mined transaction's outcome, or None when this chain does not know it."""

    @abstractmethod
    def block(self, identifier: int | str = "latest") -> BlockInfo: ...


class Web3ChainAdapter(ChainAdapter):
    """A ChainAdapter over a ``Web3`` instance and one local signing key."""

    # Exceptions that mean "the EVM reverted" for this adapter's provider.
    revert_errors: tuple[type[BaseException], ...] = (ContractLogicError,)

    def __init__(
        self,
        w3: Web3,
        private_key: bytes | str,
        *,
        expected_chain_id: int | None = None,
        gas_margin: float = 1.25,
        receipt_timeout_s: float = 120.0,
        poll_latency_s: float = 0.5,
        max_fee_per_gas_cap: int | None = None,
    ):
        self.w3 = w3
        self._signer = Account.from_key(private_key)
        self._expected_chain_id = expected_chain_id
        self._chain_id: int | None = None
        self.gas_margin = gas_margin
        self.receipt_timeout_s = receipt_timeout_s
        self.poll_latency_s = poll_latency_s
        self.max_fee_per_gas_cap = max_fee_per_gas_cap
        self._artifact = load_artifact()

    # -- identity ------------------------------------------------------------
    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            reported = int(self.w3.eth.chain_id)
            if self._expected_chain_id is not None and reported != self._expected_chain_id:
                raise ChainIdMismatch(f"node reports chain id {reported}, adapter expects {self._expected_chain_id}")
            self._chain_id = reported
        return self._chain_id

    @property
    def account(self) -> str:
        return self._signer.address

    # -- writes --------------------------------------------------------------
    def deploy_registry(self) -> str:
        factory = self.w3.eth.contract(abi=self._artifact.abi, bytecode=self._artifact.bytecode)
        receipt = self._send(self._prepare(factory.constructor()))
        return Web3.to_checksum_address(receipt["contractAddress"])

    def prepare_anchor_transaction(self, contract_address: str, root: bytes, batch_id: str) -> dict:
        """The unsigned, fully populated transaction ``anchor_root`` would sign and send.

        Gas is estimated against the chain, so a call the registry would revert
        raises AnchorRejected here, before anything is signed or paid for.
        """
        root = _as_root(root)
        _check_batch_id(batch_id)
        return self._prepare(self._registry(contract_address).functions.anchor(root, batch_id))

    def anchor_root(self, contract_address: str, root: bytes, batch_id: str) -> AnchorReceipt:
        registry = self._registry(contract_address)
        receipt = self._send(self.prepare_anchor_transaction(contract_address, root, batch_id))
        events = [
            e for e in registry.events.Anchored().process_receipt(receipt) if bytes(e["args"]["root"]) == bytes(root)
        ]
        if len(events) != 1:
            tx_hash = receipt["transactionHash"].to_0x_hex()
            raise ChainError(f"anchoring transaction {tx_hash} emitted no Anchored event for the root")
        return AnchorReceipt(
            root=bytes(root),
            batch_id=batch_id,
            contract_address=registry.address,
            tx_hash=receipt["transactionHash"].to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            timestamp=int(events[0]["args"]["timestamp"]),
            gas_used=int(receipt["gasUsed"]),
        )

    # -- reads ---------------------------------------------------------------
    def get_anchor(self, contract_address: str, root: bytes) -> AnchorRecord | None:
        root = _as_root(root)
        address = Web3.to_checksum_address(contract_address)
        at = self.w3.eth.block_number  # one block for all three reads
        if not self.w3.eth.get_code(address, block_identifier=at):
            return None
        fns = self._registry(address).functions
        timestamp = fns.anchored_at(root).call(block_identifier=at)
        if timestamp == 0:
            return None
        return AnchorRecord(
            root=root,
            batch_id=fns.batch_of(root).call(block_identifier=at),
            timestamp=int(timestamp),
            block_number=int(fns.anchored_block(root).call(block_identifier=at)),
        )

    def find_anchor_receipt(self, contract_address: str, root: bytes) -> AnchorReceipt | None:
        record = self.get_anchor(contract_address, root)
        if record is None:
            return None
        registry = self._registry(contract_address)
        # the registry records the block; its Anchored event (root is indexed) names the transaction
        logs = [
            log for log in registry.events.Anchored().get_logs(
                argument_filters={"root": record.root}, from_block=record.block_number, to_block=record.block_number)
            if bytes(log["args"]["root"]) == record.root
        ]
        if len(logs) != 1:
            raise ChainError(f"block {record.block_number} holds {len(logs)} Anchored events for the root, expected 1")
        tx_hash = logs[0]["transactionHash"].to_0x_hex()
        receipt = self.w3.eth.get_transaction_receipt(tx_hash)
        return AnchorReceipt(
            root=record.root,
            batch_id=record.batch_id,
            contract_address=registry.address,
            tx_hash=tx_hash,
            block_number=record.block_number,
            timestamp=record.timestamp,
            gas_used=int(receipt["gasUsed"]),
        )

    def is_registry(self, contract_address: str) -> bool:
        code = bytes(self.w3.eth.get_code(Web3.to_checksum_address(contract_address)))
        runtime = self._artifact.bytecode_runtime
        return len(code) == len(runtime) + IMMUTABLES_SIZE and code.startswith(runtime)

    def registry_owner(self, contract_address: str) -> str:
        return self._registry(contract_address).functions.owner().call()

    def get_transaction(self, tx_hash: str) -> TransactionInfo | None:
        try:
            receipt = self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None
        if receipt is None:
            return None
        to = receipt.get("to")
        return TransactionInfo(
            tx_hash=receipt["transactionHash"].to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            sender=Web3.to_checksum_address(receipt["from"]),
            to=Web3.to_checksum_address(to) if to else None,
            succeeded=receipt["status"] == 1,
        )

    def block(self, identifier: int | str = "latest") -> BlockInfo:
        b = self.w3.eth.get_block(identifier)
        return BlockInfo(number=int(b["number"]), hash=b["hash"].to_0x_hex(), timestamp=int(b["timestamp"]))

    # -- transaction plumbing -------------------------------------------------
    def _registry(self, contract_address: str):
        return self.w3.eth.contract(address=Web3.to_checksum_address(contract_address), abi=self._artifact.abi)

    def _fee_fields(self) -> dict:
        base_fee = self.w3.eth.get_block("latest").get("baseFeePerGas")
        if base_fee is None:  # a chain without EIP-1559
            fees = {"gasPrice": int(self.w3.eth.gas_price)}
            cap = fees["gasPrice"]
        else:
            try:
                tip = int(self.w3.eth.max_priority_fee)
            except (Web3RPCError, ValueError):
                tip = DEFAULT_PRIORITY_FEE_WEI
            # Twice the base fee survives six full blocks of base-fee increases.
            fees = {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * int(base_fee) + tip}
            cap = fees["maxFeePerGas"]
        if self.max_fee_per_gas_cap is not None and cap > self.max_fee_per_gas_cap:
            raise ChainError(f"fee per gas {cap} wei exceeds the configured cap {self.max_fee_per_gas_cap}")
        return fees

    def _prepare(self, call) -> dict:
        sender = self.account
        try:
            gas = call.estimate_gas({"from": sender})
        except self.revert_errors as exc:
            raise AnchorRejected(_revert_reason(exc)) from exc
        mined = self.w3.eth.get_transaction_count(sender, "latest")
        pending = self.w3.eth.get_transaction_count(sender, "pending")
        if pending > mined:
            raise TransactionsPending(
                f"account {sender} has {pending - mined} transaction(s) sent and not mined yet (nonce {mined} "
                f"onwards): a previous anchoring may still land, so nothing more is sent until they are mined (or "
                f"replaced); run again then")
        tx = {
            "chainId": self.chain_id,
            "from": sender,
            "nonce": pending,
            "gas": int(gas * self.gas_margin),
            **self._fee_fields(),
        }
        return call.build_transaction(tx)

    def _send(self, tx: dict) -> Any:
        if tx.get("chainId") != self.chain_id:
            raise ChainIdMismatch(f"transaction for chain {tx.get('chainId')} sent to chain {self.chain_id}")
        signed = self._signer.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=self.receipt_timeout_s, poll_latency=self.poll_latency_s
        )
        if receipt["status"] != 1:
            raise ChainError(f"transaction {tx_hash.to_0x_hex()} reverted on chain {self.chain_id}")
        return receipt


class InProcessEthereumChain(Web3ChainAdapter):
    """An EVM chain inside this process: py-evm via eth-tester and web3.

    eth-tester quietly falls back to a mock backend that cannot run contracts
    when py-evm is missing or too old, so the backend is built explicitly and
    its class asserted. The chain id is set on the py-evm chain (what CHAINID
    returns and what signed transactions are checked against) and on web3's
    ``eth_chainId``/``net_version`` endpoints, which eth-tester hard-codes.

    Unlike a real node, py-evm does not reject a transaction signed for
    another chain id; the chain here does (EIP-155 replay protection), so two
    in-process chains behave like two real ones.
    """

    def __init__(self, chain_id: int = DEFAULT_IN_PROCESS_CHAIN_ID, *, account_index: int = 0, **kwargs):
        if not isinstance(chain_id, int) or isinstance(chain_id, bool) or not 0 < chain_id < 2**64:
            raise ValueError(f"chain id must be a positive 64-bit integer, got {chain_id!r}")
        from eth_tester.exceptions import TransactionFailed

        # EthereumTesterProvider raises eth-tester's own error on a revert, not web3's.
        self.revert_errors = (ContractLogicError, TransactionFailed)
        backend = _pyevm_backend_with_chain_id(chain_id)
        tester, provider = _tester_and_provider(backend, chain_id)
        self.backend = backend
        self.tester = tester
        self.provider = provider
        key = backend.account_keys[account_index].to_bytes()
        super().__init__(Web3(provider), key, expected_chain_id=chain_id, poll_latency_s=0.01, **kwargs)

    def with_account(self, account_index: int) -> InProcessEthereumChain:
        """Another adapter on this same chain, signing with another funded test account."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other._signer = Account.from_key(self.backend.account_keys[account_index].to_bytes())
        return other

    def __repr__(self) -> str:
        return f"InProcessEthereumChain(chain_id={self._expected_chain_id}, account={self.account})"


class JsonRpcChain(Web3ChainAdapter):
    """An EVM node over HTTP(S) JSON-RPC. Nothing is contacted until first use.

    ``expected_chain_id`` guards against a URL that points at the wrong network:
    the first call that needs the chain id fails with ChainIdMismatch, before
    anything is signed.
    """

    def __init__(
        self,
        url: str,
        private_key: bytes | str,
        *,
        expected_chain_id: int | None = None,
        request_timeout_s: float = 30.0,
        receipt_timeout_s: float = 300.0,
        poll_latency_s: float = 2.0,
        **kwargs,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("JSON-RPC URL must be http(s)://host[:port][/path]")
        self.url = url
        self.request_timeout_s = request_timeout_s
        provider = Web3.HTTPProvider(url, request_kwargs={"timeout": request_timeout_s})
        super().__init__(
            Web3(provider),
            private_key,
            expected_chain_id=expected_chain_id,
            receipt_timeout_s=receipt_timeout_s,
            poll_latency_s=poll_latency_s,
            **kwargs,
        )

    def __repr__(self) -> str:
        # The path and query of a provider URL often carry an API key: show the host only.
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"JsonRpcChain({parts.scheme}://{parts.hostname}{port}, account={self.account})"


# -- in-process chain construction --------------------------------------------
def _pyevm_backend_with_chain_id(chain_id: int):
    from eth_tester import PyEVMBackend
    from eth_utils import ValidationError

    backend = PyEVMBackend()  # raises BackendDistributionNotFound when py-evm is unusable
    base = type(backend.chain)

    def apply_transaction(self, transaction):
        tx_chain_id = getattr(transaction, "chain_id", None)
        if tx_chain_id is not None and tx_chain_id != self.chain_id:
            raise ValidationError(f"transaction signed for chain {tx_chain_id}, this is chain {self.chain_id}")
        return base.apply_transaction(self, transaction)

    chain_class = type(
        f"InProcessChain{chain_id}", (base,), {"chain_id": chain_id, "apply_transaction": apply_transaction}
    )
    # Same database, same genesis; py-evm reads chain_id from the class for every VM it builds.
    backend.chain = chain_class(backend.chain.chaindb.db)
    return backend


def _tester_and_provider(backend, chain_id: int):
    from eth_tester import EthereumTester, PyEVMBackend
    from web3.providers.eth_tester import EthereumTesterProvider
    from web3.providers.eth_tester.defaults import API_ENDPOINTS, static_return

    tester = EthereumTester(backend=backend, auto_mine_transactions=True)
    if type(tester.backend) is not PyEVMBackend:  # pragma: no cover - eth-tester's silent fallback
        raise RuntimeError(f"eth-tester runs on {type(tester.backend).__name__}, not PyEVMBackend")
    endpoints = {namespace: dict(methods) for namespace, methods in API_ENDPOINTS.items()}
    endpoints["eth"]["chainId"] = static_return(chain_id)
    endpoints["net"]["version"] = static_return(str(chain_id))
    return tester, EthereumTesterProvider(tester, api_endpoints=endpoints)


# -- small validators ---------------------------------------------------------
def _as_root(root: bytes) -> bytes:
    if not isinstance(root, (bytes, bytearray)) or len(root) != 32:
        raise ValueError("root must be 32 bytes")
    return bytes(root)


def _check_batch_id(batch_id: str) -> None:
    if not isinstance(batch_id, str) or not batch_id:
        raise ValueError("batch id must be a non-empty string")
    if len(batch_id.encode("utf-8")) > MAX_BATCH_ID_BYTES:
        raise ValueError(f"batch id must be at most {MAX_BATCH_ID_BYTES} bytes of UTF-8")


def _revert_reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).removeprefix("execution reverted: ").removeprefix("execution reverted")
