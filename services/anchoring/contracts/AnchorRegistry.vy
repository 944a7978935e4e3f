#pragma version 0.4.3
#pragma optimize gas
#pragma evm-version cancun
"""
@title AnchorRegistry
@notice Records Merkle roots of credential batches. Only the deployer (owner)
        may anchor; a root can be anchored once and is never overwritten, so
        its timestamp is the earliest time the batch provably existed.
"""

event Anchored:
    root: indexed(bytes32)
    owner: indexed(address)
    batch_id: String[64]
    timestamp: uint256

owner: public(immutable(address))

# root -> block timestamp of the anchoring block (0 = not anchored)
anchored_at: public(HashMap[bytes32, uint256])
# root -> block number of the anchoring block
anchored_block: public(HashMap[bytes32, uint256])
# root -> batch id given when anchoring
batch_of: public(HashMap[bytes32, String[64]])


@deploy
def __init__():
    owner = msg.sender


@external
def anchor(root: bytes32, batch_id: String[64]):
    assert msg.sender == owner, "not owner"
    assert root != empty(bytes32), "empty root"
    assert self.anchored_at[root] == 0, "already anchored"
    self.anchored_at[root] = block.timestamp
    self.anchored_block[root] = block.number
    self.batch_of[root] = batch_id
    log Anchored(root=root, owner=msg.sender, batch_id=batch_id, timestamp=block.timestamp)
