"""Time of ``dsolo-sk weights check`` on a cold interpreter.

``weights check`` must answer in about a second on a machine without
network access: it reads the Hugging Face cache only and imports neither
torch nor diffusers nor open_clip. This script runs the command in fresh
subprocesses (a cold interpreter each time: imports included, as a user
typing it gets) against a cache it writes in the hub's own layout, holding
the default models' file lists with small stand-in files (the check reads
sizes and safetensors headers, not the tensors; ``--checksums`` hashes
the files, a cost that grows with the real weights' 5.7 GB, about a
second per GB, and is left out of the default run). It also runs it on an
empty cache (everything missing) and reports whether torch was imported.

Run::

    python benchmarks/weights_check.py            # 5 runs of each, ~5 s
    python benchmarks/weights_check.py --runs 10
    python benchmarks/weights_check.py --save     # into results/

It prints the median and the range of the wall times; it writes them as
JSON only with ``--save`` (``benchmarks/results/weights_check.json``) or
``--out FILE``. A benchmark, not a test: nothing fails on a slow machine.
"""

import argparse
import hashlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsolo_sk.features import _hub, weights  # noqa: E402

PROBE = ("import sys; from dsolo_sk.cli import main; status = main(['weights',"
         " 'check']); print('torch' in sys.modules); sys.exit(status)")


def _safetensors(n_bytes):
    header = json.dumps({"w": {"dtype": "U8", "shape": [n_bytes],
                               "data_offsets": [0, n_bytes]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(n_bytes)


def write_cache(folder):
    """The default models' files in the hub's layout (small stand-ins)."""
    specs = [weights._clip_spec(weights.DEFAULT_CLIP),
             weights._sd_spec(weights.DEFAULT_SD)]
    for spec in specs:
        commit = spec.revision or "3" * 40
        repo = Path(folder) / ("models--" + spec.repo.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        for alternatives in spec.files:
            name = alternatives[0]
            data = _safetensors(1024) if name.endswith(".safetensors") \
                else b"{}"
            etag = hashlib.sha256(data).hexdigest()
            (repo / "blobs").mkdir(parents=True, exist_ok=True)
            (repo / "blobs" / etag).write_bytes(data)
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(os.path.relpath(repo / "blobs" / etag,
                                                link.parent))
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return folder


def time_runs(cache, runs):
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    seconds, torch, status = [], None, None
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PROBE], env=env,
                              capture_output=True, text=True, cwd=ROOT)
        seconds.append(time.perf_counter() - t0)
        torch = proc.stdout.strip().splitlines()[-1] == "True"
        status = proc.returncode
    return {"median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds), "runs": runs, "exit_status": status,
            "torch_imported": torch}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--save", action="store_true",
                        help="write the JSON into benchmarks/results/")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.save and args.out is None:
        args.out = Path(__file__).parent / "results" / "weights_check.json"
    with tempfile.TemporaryDirectory() as tmp:
        full = write_cache(Path(tmp) / "full")
        empty = Path(tmp) / "empty"
        empty.mkdir()
        result = {"complete_cache": time_runs(full, args.runs),
                  "empty_cache": time_runs(empty, args.runs),
                  "python": sys.version.split()[0],
                  "sd": f"{_hub.DEFAULT_SD}@{_hub.PINNED[_hub.DEFAULT_SD]}",
                  "clip": weights.DEFAULT_CLIP}
    for name in ("complete_cache", "empty_cache"):
        r = result[name]
        print(f"dsolo-sk weights check, cold interpreter, {name}: median "
              f"{r['median_s']:.2f} s (min {r['min_s']:.2f}, max "
              f"{r['max_s']:.2f}, {r['runs']} runs), exit status "
              f"{r['exit_status']}, torch imported: {r['torch_imported']}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
