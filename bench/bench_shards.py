"""One big file, many workers: wall time of a large CSV through the local pipeline with 1, 2 and
4 worker tasks, each held to one core of its own (`sluice-local --task-cpus 1`), as a Fargate task
of 1 vCPU is. On this 2-core machine N tasks model N Fargate tasks up to 2; a third and fourth
task share the cores.

Cases, in one run, on the same file:
  * 1 worker, sharding off: the file whole, as sluice ran every file before shards;
  * 1 worker, sharding on: what splitting and assembling cost;
  * 2 and 4 workers, sharding on;
  * `worker transform` on the file from disk, pinned to one core: parsing and the model alone.

For each pipeline case: wall time from the end of the upload (`aws s3 cp`) to the report's
`finished_at`, rows/s, the speed-up over one worker whole, the CPU seconds of the workers and of
moto (sampled from /proc while the case runs), and from the report: shard count, seconds per
shard and the assembly's seconds.

    .venv/bin/python bench/bench_shards.py                  # 20,000,000 rows, about 540 MB
    .venv/bin/python bench/bench_shards.py --rows 2000000   # a quick look

Needs `cargo build --release --workspace` first (make bench-shards does it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
AWS = ROOT / ".venv" / "bin" / "aws"
MODEL = ROOT / "models" / "iris_logreg.onnx"
INPUT_BUCKET, OUTPUT_BUCKET, KEY = "sluice-input", "sluice-output", "big.csv"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def make_file(path: Path, rows: int) -> None:
    """iris.csv's rows over and over, with fresh ids."""
    lines = (ROOT / "examples" / "data" / "iris.csv").read_text().splitlines()
    header, samples = lines[0], [line.split(",", 1)[1] for line in lines[1:]]
    with path.open("w") as out:
        out.write(header + "\n")
        block = 100_000
        for start in range(0, rows, block):
            out.write("".join(f"{i + 1},{samples[i % len(samples)]}\n" for i in range(start, min(rows, start + block))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(root: int) -> dict[int, str]:
    """The processes under `root`, with their command lines."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                frontier.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(port: int, key: str) -> bytes | None:
    """An output object, read without the AWS CLI (whose start-up would take CPU from the workers):
    moto wants an Authorization header but does not check its signature."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{OUTPUT_BUCKET}/{key}", headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, "
                         "SignedHeaders=host, Signature=0"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.read()
    except urllib.error.HTTPError:
        return None


def pipeline_case(data: Path, workers: int, shard_bytes: int) -> dict:
    port = free_port()
    command = [
        str(TARGET / "sluice-local"), "run", "--port", str(port), "--model", str(MODEL),
        "--data", str(ROOT / "examples" / "data" / "iris.csv"), "--max-workers", str(workers),
        "--shard-bytes", str(shard_bytes), "--task-cpus", "1", "--timeout", "7200",
    ]
    local = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in local.stdout:
            if line.startswith("The pipeline keeps running"):
                break
        env = {**os.environ, **CREDENTIALS}
        subprocess.run([str(AWS), "--endpoint-url", f"http://127.0.0.1:{port}", "s3", "cp", "--quiet", str(data),
                        f"s3://{INPUT_BUCKET}/{KEY}"], check=True, env=env)
        uploaded = time.time()
        # CPU seconds from here on: what each process had used before (moto taking the upload,
        # the first file's worker) is subtracted.
        before = {pid: cpu_seconds(pid) for pid in descendants(local.pid)}
        cpu: dict[int, tuple[str, float]] = {}
        while (report := get(port, f"{KEY}.report.json")) is None:
            for pid, cmdline in descendants(local.pid).items():
                try:
                    cpu[pid] = (cmdline, cpu_seconds(pid) - before.get(pid, 0.0))
                except OSError:
                    pass
            time.sleep(0.5)
        report = json.loads(report)
    finally:
        local.send_signal(signal.SIGINT)
        local.wait(timeout=120)
    finished = datetime.fromisoformat(report["finished_at"].replace("Z", "+00:00")).timestamp()
    split = report.get("split") or {}
    shards = split.get("shards", {})
    return {
        "wall": finished - uploaded,
        "rows": report["rows"]["in"],
        "status": report["status"],
        "worker_cpu": sum(s for c, s in cpu.values() if Path((c.split() or [""])[0]).name == "worker"),
        "moto_cpu": sum(s for c, s in cpu.values() if "moto" in c),
        "shards": shards.get("count", 1) if isinstance(shards, dict) else 1,
        "shard_seconds": [s["seconds"] for s in shards.get("shards", [])] if isinstance(shards, dict) else [],
        "assembly": shards.get("assembly_seconds", 0.0) if isinstance(shards, dict) else 0.0,
    }


def whole_file(data: Path) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run(["taskset", "-c", "0", str(TARGET / "worker"), "transform", "--model", str(MODEL),
                        "--input", str(data), "--output", f"{out}/big.csv.out"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--shard-mib", type=int, default=64, help="the shard size (SHARD_BYTES) in MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / KEY
        make_file(data, args.rows)
        size = data.stat().st_size
        print(f"{args.rows:,} rows, {size / 1e6:.0f} MB, shards of {args.shard_mib} MiB, each task on one core")
        alone = whole_file(data)
        print(f"worker transform, file to file, one core: {alone:.1f} s, {args.rows / alone:,.0f} rows/s")
        cases = [("1 worker, whole", 1, 0), ("1 worker, sharded", 1, args.shard_mib << 20),
                 ("2 workers, sharded", 2, args.shard_mib << 20), ("4 workers, sharded", 4, args.shard_mib << 20)]
        results = []
        for name, workers, shard_bytes in cases:
            result = pipeline_case(data, workers, shard_bytes)
            results.append((name, result))
            print(f"  {name}: {result['wall']:.1f} s ({result['status']})", flush=True)
    base = results[0][1]
    print()
    print("| case | shards | wall (upload to report) | rows/s | speed-up | worker CPU s | moto CPU s | assembly s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results:
        print(f"| {name} | {r['shards']} | {r['wall']:.1f} s | {r['rows'] / r['wall']:,.0f} | "
              f"{base['wall'] / r['wall']:.2f}x | {r['worker_cpu']:.1f} | {r['moto_cpu']:.1f} | {r['assembly']:.1f} |")
    sharded_one = results[1][1]
    print()
    print(f"sharding's cost on one worker: {sharded_one['wall'] / base['wall'] - 1:+.1%} wall, "
          f"{sharded_one['worker_cpu'] / max(base['worker_cpu'], 1e-9) - 1:+.1%} worker CPU")
    print(f"2 workers against 1: {results[2][1]['wall'] / base['wall']:.2f} of the time (target: at most 0.60)")
    for name, r in results[1:]:
        if r["shard_seconds"]:
            seconds = sorted(r["shard_seconds"])
            print(f"{name}: seconds per shard {seconds[0]:.1f} to {seconds[-1]:.1f}")


if __name__ == "__main__":
    main()
