"""ledger.merkle against the published RFC 6962 / transparency-dev vectors, and random trees.

tests/data/merkle holds transparency-dev/merkle's ``testdata/inclusion`` and ``testdata/consistency``
probes (Apache-2.0, commit 417fb0c314750d94e53942e9f92e79b6d35915db): each names a proof, the roots
and sizes, and whether a correct verifier accepts it. The leaves, node hashes and roots of the 8-leaf
tree below are from the same repository (``testonly/constants.go``, ``cmd/proofgen/main.go``), the
RFC 6962 test data of the Certificate Transparency code.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import ProofError

DATA = Path(__file__).parent / "data" / "merkle"

LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # empty tree
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
LEAF_HASHES = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    )
]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# (leaf index, tree size, proof) and (old size, new size, proof) from cmd/proofgen/main.go;
# leaf indexes there are 1-based, here 0-based.
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def test_hashes_of_the_rfc6962_leaves() -> None:
    assert merkle.EMPTY_ROOT == hashlib.sha256(b"").digest() == ROOTS[0]
    assert [merkle.leaf_hash(leaf) for leaf in LEAVES] == LEAF_HASHES


@pytest.mark.parametrize("size", range(9))
def test_roots_of_every_prefix(size: int) -> None:
    assert merkle.root_of(LEAF_HASHES[:size]) == ROOTS[size]
    compact = merkle.CompactRange()
    for leaf in LEAF_HASHES[:size]:
        compact.append(leaf)
    assert compact.root() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_published_ones(index: int, size: int, proof: list[bytes]) -> None:
    assert merkle.inclusion_proof(index, size, merkle.in_memory(LEAF_HASHES[:size])) == proof
    merkle.verify_inclusion(index, size, LEAF_HASHES[index], proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_published_ones(old: int, new: int, proof: list[bytes]) -> None:
    assert merkle.consistency_proof(old, new, merkle.in_memory(LEAF_HASHES[:new])) == proof
    merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def _probes(kind: str) -> list[Path]:
    found = sorted((DATA / kind).rglob("*.json"))
    assert len(found) > 80, f"{kind} probes missing from {DATA}"
    return found


@pytest.mark.parametrize("path", _probes("inclusion"), ids=lambda p: str(p.relative_to(DATA)))
def test_inclusion_probes(path: Path) -> None:
    probe = json.loads(path.read_text())
    args = (
        probe["leafIdx"],
        probe["treeSize"],
        _b64(probe["leafHash"]),
        [_b64(p) for p in probe["proof"] or []],
        _b64(probe["root"]),
    )
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _probes("consistency"), ids=lambda p: str(p.relative_to(DATA)))
def test_consistency_probes(path: Path) -> None:
    probe = json.loads(path.read_text())
    args = (
        probe["size1"],
        probe["size2"],
        _b64(probe["root1"]),
        _b64(probe["root2"]),
        [_b64(p) for p in probe["proof"] or []],
    )
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_a_mismatch_carries_both_roots() -> None:
    with pytest.raises(ProofError) as caught:
        merkle.verify_inclusion(0, 8, LEAF_HASHES[0], INCLUSION[1][2], ROOTS[7])
    assert caught.value.expected == ROOTS[7] and caught.value.found == ROOTS[8]


# -- random trees ---------------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


def _tree(data: list[bytes]) -> tuple[list[bytes], merkle.CompactRange, dict[tuple[int, int], bytes]]:
    leaves = [merkle.leaf_hash(d) for d in data]
    compact, stored = merkle.CompactRange(), {}
    for leaf in leaves:
        for level, index, digest in compact.append(leaf):
            stored[(level, index)] = digest
    return leaves, compact, stored


def _flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    changed = bytearray(proof[i])
    changed[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:i], bytes(changed), *proof[i + 1 :]]


@settings(max_examples=150, deadline=None)
@given(data=leaf_lists, pick=st.integers(min_value=0), bit=st.integers(0, 255))
def test_every_inclusion_proof_verifies_and_no_tampered_one_does(data: list[bytes], pick: int, bit: int) -> None:
    leaves, compact, stored = _tree(data)
    size = len(leaves)
    root = merkle.root_of(leaves)
    assert compact.root() == root
    index = pick % size

    def from_nodes(start: int, end: int) -> bytes:
        return merkle.fold([stored[n] for n in merkle.perfect_nodes(start, end)])

    proof = merkle.inclusion_proof(index, size, from_nodes)
    assert proof == merkle.inclusion_proof(index, size, merkle.in_memory(leaves))
    merkle.verify_inclusion(index, size, leaves[index], proof, root)

    def true_statement(i: int, n: int, leaf: bytes, path: list[bytes], claimed: bytes) -> bool:
        """Whether a changed claim happens to be true anyway (random trees repeat leaves)."""
        return (
            0 <= i < n <= size
            and leaf == leaves[i]
            and claimed == merkle.root_of(leaves[:n])
            and path == merkle.inclusion_proof(i, n, merkle.in_memory(leaves[:n]))
        )

    bad = [
        (index, size, _flip([leaves[index]], 0, bit)[0], proof, root),  # another leaf
        (index, size, leaves[index], [*proof, root], root),  # garbage after the proof
        (index, size, leaves[index], [root, *proof], root),  # garbage before it
    ]
    # Not in the list: the same proof and root with a *larger* size. A proof does not bind the size
    # (leaf 0's proof in a tree of 3 is a valid proof of leaf 0 in a tree of 4 whose last two leaves
    # hash to the third); the signed checkpoint does, which is why proofs ship with one.
    if proof:
        bad += [
            (index, size, leaves[index], _flip(proof, pick % len(proof), bit), root),
            (index, size, leaves[index], proof[:-1], root),
        ]
    for other in {(index + 1) % size, index ^ 1, index // 2} - {index}:
        if other < size:
            bad.append((other, size, leaves[index], proof, root))  # another index
    for smaller in {size - 1, index + 1} - {size}:
        if smaller > index:  # another size, against that size's true root
            bad.append((index, smaller, leaves[index], proof, merkle.root_of(leaves[:smaller])))
    for args in bad:
        if not true_statement(*args):
            with pytest.raises(ProofError):
                merkle.verify_inclusion(*args)


@settings(max_examples=150, deadline=None)
@given(data=leaf_lists, pick=st.integers(min_value=0), bit=st.integers(0, 255))
def test_every_consistency_proof_verifies_and_no_tampered_one_does(data: list[bytes], pick: int, bit: int) -> None:
    leaves, _, _ = _tree(data)
    new = len(leaves)
    old = 1 + pick % new
    old_root, new_root = merkle.root_of(leaves[:old]), merkle.root_of(leaves)
    proof = merkle.consistency_proof(old, new, merkle.in_memory(leaves))
    merkle.verify_consistency(old, new, old_root, new_root, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, _flip([old_root], 0, bit)[0], new_root, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, old_root, _flip([new_root], 0, bit)[0], proof)
    if new > old + 1:  # another (smaller) new size, against that size's true root
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new - 1, old_root, merkle.root_of(leaves[: new - 1]), proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(new, old - 1, new_root, old_root, proof)  # a log that shrank
    if proof:
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, old_root, new_root, _flip(proof, pick % len(proof), bit))
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, old_root, new_root, proof[:-1])
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, old_root, new_root, [*proof, new_root])


@given(start_level=st.integers(0, 6), index=st.integers(0, 50), length=st.integers(1, 64))
def test_perfect_nodes_cover_aligned_ranges(start_level: int, index: int, length: int) -> None:
    align = 1 << max(length.bit_length() - 1, start_level)
    start = index * align
    nodes = merkle.perfect_nodes(start, start + length)
    assert sum(1 << level for level, _ in nodes) == length
    position = start
    for level, i in nodes:
        assert i << level == position
        position += 1 << level
