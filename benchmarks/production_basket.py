"""Generate, time and verify the production basket (docs/basket.md's figures), and write its pins.

    python benchmarks/production_basket.py generate --dir DIR --out report.json [--device cpu|gpu]
    python benchmarks/production_basket.py verify --dir DIR --out verify.json

``generate`` writes each model with :func:`reference_runtime.production.write` (not installing
through ``build``, so it works before pins exist) and reports size, seconds and every tensor's
SHA-256 (``--check``: compared with the committed pins); ``--pins`` merges those digests into a
pins file. ``verify`` re-hashes the files against the committed pins and reports the time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from reference_runtime import production
from reference_runtime.basket import model_path


def generate(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict[str, object]] = {}
    for key in args.models or list(production.SPECS):
        generated = production.write(production.SPECS[key], model_path(directory, key),
                                     use_gpu={"cpu": False, "gpu": True, "auto": None}[args.device])
        report[key] = {"bytes": generated.nbytes, "seconds": round(generated.seconds, 2), "device": generated.device,
                       "pin": production.pin_record(generated)}
        print(f"{key}: {generated.nbytes / 1e9:.2f} GB in {generated.seconds:.1f} s on {generated.device}", flush=True)
        if args.check:
            wrong = production.differences(production.pin_record(generated), production.pins().get(key))
            report[key]["matches_pins"] = not wrong
            verdict = "identical to the pins, tensor for tensor" if not wrong else f"DIFFERS from the pins: {wrong}"
            print(f"{key}: {verdict}", flush=True)
        if args.pins:
            path = Path(args.pins)
            pins = json.loads(path.read_text()) if path.exists() else {}
            pins[key] = production.pin_record(generated)
            path.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    Path(args.out).write_text(json.dumps(report, indent=1))


def verify(args: argparse.Namespace) -> None:
    report: dict[str, dict[str, object]] = {}
    pins = production.pins()
    for key in production.SPECS:
        path = model_path(Path(args.dir), key)
        start = time.perf_counter()
        problems = production.verify_file(path, pins[key])
        seconds = time.perf_counter() - start
        report[key] = {"seconds": round(seconds, 2), "problems": [str(p) for p in problems]}
        print(f"{key}: verified in {seconds:.1f} s: {'ok' if not problems else problems}", flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    if any(r["problems"] for r in report.values()):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--dir", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto")
    g.add_argument("--pins", help="merge the digests into this pins file")
    g.add_argument("--models", nargs="*")
    g.add_argument("--check", action="store_true", help="compare every tensor's digest with the committed pins")
    v = sub.add_parser("verify")
    v.add_argument("--dir", required=True)
    v.add_argument("--out", required=True)
    args = parser.parse_args()
    {"generate": generate, "verify": verify}[args.cmd](args)


if __name__ == "__main__":
    main()
