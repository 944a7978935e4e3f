"""RFC 6962 Merkle tree: published test vectors, a literal recursive reference, properties."""

import hashlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.anchoring.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    root_from_inclusion_proof,
    split_point,
    verify_inclusion,
)

# The test data of certificate-transparency's Merkle tree tests (RFC 6962 trees).
RFC_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
RFC_ROOTS = [  # root of the first n leaves, n = 1..8
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
RFC_INCLUSION_PROOFS = [  # (index, tree size, audit path)
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


# -- a literal transcription of RFC 6962 §2.1 (recursive, slow, obviously right) --
def _k(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d):
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m, d):
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


leaves_st = st.lists(st.binary(max_size=40), min_size=1, max_size=70)


def test_rfc6962_roots():
    assert (
        MerkleTree([]).root
        == EMPTY_ROOT
        == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    )
    for n, expected in enumerate(RFC_ROOTS, start=1):
        assert MerkleTree(RFC_LEAVES[:n]).root.hex() == expected


@pytest.mark.parametrize("index,size,path", RFC_INCLUSION_PROOFS)
def test_rfc6962_inclusion_proofs(index, size, path):
    tree = MerkleTree(RFC_LEAVES[:size])
    assert [p.hex() for p in tree.inclusion_proof(index)] == path
    root = bytes.fromhex(RFC_ROOTS[size - 1])
    assert verify_inclusion(leaf_hash(RFC_LEAVES[index]), index, size, [bytes.fromhex(p) for p in path], root)


def test_split_point_is_largest_power_of_two_below_n():
    assert [split_point(n) for n in range(2, 10)] == [1, 2, 2, 4, 4, 4, 4, 8]
    with pytest.raises(ValueError):
        split_point(1)


@settings(max_examples=150, deadline=None)
@given(leaves_st)
def test_matches_recursive_reference(leaves):
    tree = MerkleTree(leaves)
    assert tree.size == len(leaves)
    assert tree.root == ref_mth(leaves)
    for i in range(len(leaves)):
        assert tree.inclusion_proof(i) == ref_path(i, leaves)


@settings(max_examples=150, deadline=None)
@given(leaves_st)
def test_every_leaf_proof_verifies(leaves):
    tree = MerkleTree(leaves)
    for i, leaf in enumerate(leaves):
        assert verify_inclusion(leaf_hash(leaf), i, tree.size, tree.inclusion_proof(i), tree.root)


@settings(max_examples=150, deadline=None)
@given(leaves_st, st.data())
def test_modified_leaf_fails(leaves, data):
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    other = data.draw(st.binary(max_size=40))
    assume(other != leaves[i])
    assert not verify_inclusion(leaf_hash(other), i, tree.size, tree.inclusion_proof(i), tree.root)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=2, max_size=70, unique=True), st.data())
def test_modified_proof_fails(leaves, data):
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    path = tree.inclusion_proof(i)
    j = data.draw(st.integers(0, len(path) - 1))
    bit = data.draw(st.integers(0, 255))
    flipped = bytearray(path[j])
    flipped[bit // 8] ^= 1 << (bit % 8)
    tampered = path[:j] + [bytes(flipped)] + path[j + 1 :]
    assert not verify_inclusion(tree.leaf_hash(i), i, tree.size, tampered, tree.root)
    # dropping, appending or reordering path elements fails too
    assert not verify_inclusion(tree.leaf_hash(i), i, tree.size, path[:-1], tree.root)
    assert not verify_inclusion(tree.leaf_hash(i), i, tree.size, path + [path[0]], tree.root)
    if len(path) > 1:
        assert not verify_inclusion(tree.leaf_hash(i), i, tree.size, path[::-1], tree.root)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=2, max_size=70, unique=True), st.data())
def test_modified_index_fails(leaves, data):
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    j = data.draw(st.integers(0, 2 * len(leaves)).filter(lambda j: j != i))
    assert not verify_inclusion(tree.leaf_hash(i), j, tree.size, tree.inclusion_proof(i), tree.root)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=70), st.data())
def test_modified_size_fails_when_it_changes_the_path(leaves, data):
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    other_size = data.draw(st.integers(0, 3 * len(leaves)).filter(lambda n: n != len(leaves)))
    path = tree.inclusion_proof(i)
    # The root commits to the leaves, not to the size: a size giving leaf i the same
    # path shape (e.g. index 0 of 3 and of 4) verifies as well. Anything else must fail.
    if other_size <= i or len(ref_path(i, [b""] * other_size)) != len(path):
        assert not verify_inclusion(tree.leaf_hash(i), i, other_size, path, tree.root)


def test_size_is_not_committed_by_the_root_rfc_property():
    # Documents the limit of the previous test: index 0 has the same path shape in
    # trees of 3 and 4 leaves, so the size-3 proof also "verifies" as size 4.
    tree = MerkleTree(RFC_LEAVES[:3])
    assert verify_inclusion(tree.leaf_hash(0), 0, 4, tree.inclusion_proof(0), tree.root)
    assert not verify_inclusion(tree.leaf_hash(0), 0, 2, tree.inclusion_proof(0), tree.root)


def test_wrong_root_and_malformed_inputs_fail():
    tree = MerkleTree(RFC_LEAVES)
    lh, path, root = tree.leaf_hash(3), tree.inclusion_proof(3), tree.root
    assert verify_inclusion(lh, 3, 8, path, root)
    assert not verify_inclusion(lh, 3, 8, path, MerkleTree(RFC_LEAVES[:7]).root)
    assert not verify_inclusion(lh, 3, 8, path, root[:31])
    assert not verify_inclusion(lh, 3, 8, [p[:31] for p in path], root)
    assert not verify_inclusion(lh[:31], 3, 8, path, root)
    assert not verify_inclusion(lh, -1, 8, path, root)
    assert not verify_inclusion(lh, 8, 8, path, root)
    assert not verify_inclusion(lh, True, 8, path, root)
    assert root_from_inclusion_proof(lh, 3, 8, path) == root
    # a single-leaf tree: empty path, root is the leaf hash
    single = MerkleTree([b"only"])
    assert single.inclusion_proof(0) == [] and single.root == leaf_hash(b"only")
    assert verify_inclusion(leaf_hash(b"only"), 0, 1, [], single.root)
    assert not verify_inclusion(leaf_hash(b"only"), 0, 1, [single.root], single.root)


def test_leaf_and_node_hashes_are_domain_separated():
    # A leaf whose content is the concatenation of two child hashes must not
    # hash to their parent node (second-preimage protection of RFC 6962).
    tree = MerkleTree([b"a", b"b"])
    fake_leaf = tree.leaf_hash(0) + tree.leaf_hash(1)
    assert leaf_hash(fake_leaf) != tree.root
    assert not verify_inclusion(leaf_hash(fake_leaf), 0, 1, [], tree.root)


def test_index_outside_tree_raises():
    tree = MerkleTree([b"x", b"y"])
    for bad in (-1, 2, True):
        with pytest.raises(IndexError):
            tree.inclusion_proof(bad)
    with pytest.raises(IndexError):
        MerkleTree([]).inclusion_proof(0)


def test_from_leaf_hashes_matches_and_validates():
    hashes = [leaf_hash(x) for x in RFC_LEAVES]
    assert MerkleTree.from_leaf_hashes(hashes).root == MerkleTree(RFC_LEAVES).root
    with pytest.raises(ValueError):
        MerkleTree.from_leaf_hashes([b"short"])
