"""The transparency log at scale: append cost, checkpoint time, proof sizes and proof verify time.

    python benchmarks/tlog_scale.py [--entries 1000000] [--path FILE] [--full]

Fills a SQLite ledger with ``--entries`` synthetic verdicts (the verdicts of ledger_bench.py, each
hashed, signed and added to the Merkle tree; skipped when ``--path`` names a ledger already that
large), then times, at that size: one more append (and the tree's share of it), a signed
checkpoint, inclusion and consistency proof generation, their sizes, and verifying an inclusion
proof file offline (the goal: under 10 ms). ``--full`` also times a whole ``verify`` (chain and
every tree node) and the migration that builds the tree of an existing ledger of that size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from alembic import command
from ledger_bench import _timed, _verdicts  # the same synthetic verdicts, the same timer

from ledger import Ledger, keys, merkle, proofs, schema, tlog


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def fill(ledger: Ledger, entries: int, batch: int) -> None:
    have = ledger.head()[0]
    if have >= entries:
        print(f"ledger already holds {have:,} entries")
        return
    print(f"filling to {entries:,} entries ({batch:,} per transaction) …", flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    done = have
    while done < entries:
        count = min(batch, entries - done)
        ledger.record_evaluations(_verdicts(done, count), batch_size=batch)
        done += count
        if done % (10 * batch) == 0 or done == entries:
            print(f"  {done:>9,} entries  {(done - have) / (time.perf_counter() - start):,.0f} entries/s", flush=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = entries - have
    print(f"fill: {n:,} appends in {wall:.1f} s (CPU {cpu:.1f} s = {cpu / n * 1e6:.0f} µs per entry, tree included)")


def run(path: Path, entries: int, batch: int, key_path: Path, full: bool) -> None:
    signer = keys.Signer.load(key_path) if key_path.exists() else keys.generate(key_path)[0]
    url = f"sqlite:///{path.resolve()}"
    ledger = Ledger.open(url, signer=signer, create=True)
    fill(ledger, entries, batch)
    size = ledger.head()[0]
    origin = proofs.default_origin(signer.key_id)
    print(f"ledger: {path} ({path.stat().st_size / 2**20:,.0f} MiB), {size:,} entries")
    with ledger.engine.connect() as conn:
        nodes = tlog.stored_count(conn)
    print(f"tree: {nodes:,} stored nodes (2n − popcount(n) = {tlog.node_count(size):,})")

    # Append cost: the tree's share, inside a transaction that is rolled back, then a whole append.
    def tree_append() -> None:
        with ledger.engine.connect() as conn, conn.begin() as tx:
            tlog.append(conn, size, ["ab" * 32])
            tx.rollback()

    tree_s, _ = _timed(tree_append, 200)
    made = (size ^ (size + 1)).bit_length()
    print(f"append, tree share at n = {size:,}: {_ms(tree_s)} (frontier read + {made} node inserts)")
    one_s, _ = _timed(lambda: ledger.record_evaluation(next(_verdicts(size + 7, 1))), 20)
    print(f"append, one whole verdict (own transaction, fsync'd): {_ms(one_s)}")
    size = ledger.head()[0]

    cp_s, signed = _timed(lambda: ledger.checkpoint(signer, origin), 50)
    print(f"checkpoint (root of {size:,} entries + Ed25519 signature): {_ms(cp_s)}; {len(signed.text())} bytes")

    seq = size // 2 + 1
    inc_s, (entry_hash, path_) = _timed(lambda: ledger.inclusion_proof(seq, size), 50)
    print(f"inclusion proof of entry {seq:,}: {len(path_)} hashes = {32 * len(path_)} bytes; generated in {_ms(inc_s)}")
    old = max(1, size // 2 - 12345)
    con_s, consistency = _timed(lambda: ledger.consistency_proof(old, size), 50)
    print(
        f"consistency proof {old:,} → {size:,}: {len(consistency)} hashes = {32 * len(consistency)} bytes; {_ms(con_s)}"
    )
    doc_s, doc = _timed(lambda: proofs.prove(ledger, seq, signer, origin), 20)
    text = json.dumps(doc, indent=2)
    print(f"proof file (evalbot ledger prove): {len(text):,} bytes, built in {_ms(doc_s)}")

    leaf = merkle.leaf_hash(bytes.fromhex(entry_hash))
    root = signed.checkpoint.root
    v_inc, _ = _timed(lambda: merkle.verify_inclusion(seq - 1, size, leaf, path_, root), 2000)
    _, old_root = ledger.tree_root(old)
    v_con, _ = _timed(lambda: merkle.verify_consistency(old, size, old_root, root, consistency), 2000)
    v_file, _ = _timed(lambda: proofs.verify_proof(json.loads(text), signer.public_hex), 200)
    print(f"verify inclusion proof: {_ms(v_inc)}; consistency proof: {_ms(v_con)}")
    print(
        f"verify-proof of the file (parse, re-hash record, entry signature, checkpoint signature, path): {_ms(v_file)}"
    )

    if full:
        start, cpu = time.perf_counter(), time.process_time()
        report = ledger.verify([signer.public_hex])
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"verify (chain + every tree node): {report.entries:,} entries in {wall:.1f} s "
            f"(CPU {cpu:.1f} s = {cpu / report.entries * 1e6:.0f} µs per entry), ok={report.ok}"
        )
        ledger.close()
        engine = ledger.engine
        with engine.begin() as conn:
            command.downgrade(schema.alembic_config(conn), "0004")
        start, cpu = time.perf_counter(), time.process_time()
        schema.upgrade(engine, str(path))
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - start
        print(f"migration 0005 (build the tree of {size:,} existing entries): {wall:.1f} s (CPU {cpu:.1f} s)")
        with Ledger.open(url) as again:
            assert again.tree_root() == (size, root)
    ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--path", type=Path, help="a SQLite ledger to fill or reuse (default: a temporary file)")
    parser.add_argument("--full", action="store_true", help="also time a whole verify and the migration")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlog-scale-") as tmp:
        path = args.path or Path(tmp) / "tlog.sqlite"
        run(path, args.entries, args.batch, path.with_name(path.name + ".key"), args.full)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
