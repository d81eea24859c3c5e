"""Requests per second and latency of `worker serve` against FastAPI + uvicorn + onnxruntime.

Both servers serve models/repository and answer the same TensorFlow Serving predict request, one
row per request: iris version 1 (logistic regression), iris version 2 (MLP) and half_plus_two.
Each server is pinned to core 0 and given one inference thread; the load generator, wrk, is
pinned to core 1 and drives each case for --duration seconds with 1, 16 and 64 connections.

The load generator must not be the limit. Two checks are printed: wrk's ceiling (the same
connections on `GET /ping` of `worker serve`, a route that does no work), and the share of its
core wrk used in each run (from its CPU time): a run in which wrk kept its core busy says more
about wrk than about the server.

worker serve runs as deployed, needing an API key, and every request (to either server) carries
one. With --without-keys a second worker serve, open to all, runs the same REST cases, and the
ratio of the two shows what checking the key costs.

    .tools/models/bin/python bench/bench_serve.py                # make bench-serve
    .tools/models/bin/python bench/bench_serve.py --duration 5 --connections 16

Then gRPC: KServe's ModelInfer (raw tensors, as tritonclient.grpc sends them) of the same rows
to `worker serve`'s gRPC port, driven by h2load (nghttp2's HTTP/2 load generator, Debian's
nghttp2-client) pinned as wrk is, beside the REST figures of the same run.

Then memory under large requests: TF Serving `instances` requests of --large-rows iris rows
(800,000: 14 MB of JSON, under the 16 MiB body limit) to iris version 2, on the same pinned
servers: the time to answer one, the resident memory (sampled from /proc every 5 ms) while six
are sent at once, what each of the six was answered, and the resident memory 1 s and 5 s after.

Needs `cargo build --release --workspace` (make bench-serve does it), wrk and h2load (Debian's
wrk and nghttp2-client).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "worker"
REPOSITORY = ROOT / "models" / "repository"
SERVER_CORE, CLIENT_CORE = "0", "1"

# (case, path, body): TF Serving's predict request with one row.
CASES = [
    ("iris v1 logreg", "/v1/models/iris/versions/1:predict", {"instances": [[5.9, 3.0, 5.1, 1.8]]}),
    ("iris v2 mlp", "/v1/models/iris/versions/2:predict", {"instances": [[5.9, 3.0, 5.1, 1.8]]}),
    ("half_plus_two", "/v1/models/half_plus_two/versions/1:predict", {"instances": [1.0, 2.0, 5.0]}),
]


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu: float  # share of its core wrk used


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer within {timeout:.0f} s")


# worker serve runs as deployed, needing an API key; every request carries it (FastAPI ignores it).
API_KEY = "bench-serve-key-0123456789"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=HEADERS, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def numbers(value) -> list[float]:
    """The numbers of a JSON answer, in order (keys sorted)."""
    if isinstance(value, dict):
        return [n for key in sorted(value) for n in numbers(value[key])]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return [float(value)]


def milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url: str, connections: int, duration: int, body: dict | None, scripts: Path) -> Run:
    command = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if body is not None:
        script = scripts / f"post-{abs(hash(json.dumps(body)))}.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
        command += ["-s", str(script)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    output = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / elapsed
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Run(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=milliseconds(percentiles["50"]),
        p99_ms=milliseconds(percentiles["99"]),
        errors=(int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
        client_cpu=cpu,
    )


def resident_peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def model_infer_frame(model: str, version: str, name: str, rows: list[list[float]]) -> bytes:
    """A gRPC frame of KServe's ModelInferRequest with one FP32 input in raw_input_contents."""
    import struct

    shape = b"".join(varint(d) for d in (len(rows), len(rows[0])))
    tensor = field(1, name.encode()) + field(2, b"FP32") + field(3, shape)
    raw = b"".join(struct.pack("<f", v) for row in rows for v in row)
    message = field(1, model.encode()) + field(2, version.encode()) + field(5, tensor) + field(7, raw)
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass
class GrpcRun:
    requests_per_second: float
    mean_ms: float
    max_ms: float
    errors: int
    client_cpu: float


def check_grpc(url: str, frame: Path) -> None:
    """Exits unless the call of `frame` succeeds (h2load sees HTTP statuses, not gRPC's trailers)."""
    command = ["curl", "-s", "--http2-prior-knowledge", "-H", "content-type: application/grpc", "-H", "te: trailers"]
    command += ["-H", f"authorization: Bearer {API_KEY}"]
    command += ["--data-binary", f"@{frame}", "-D", "-", "-o", "/dev/null", url]
    head = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if "grpc-status: 0" not in head:
        sys.exit(f"the gRPC call to {url} failed:\n{head}")


def h2load(url: str, connections: int, duration: int, frame: Path) -> GrpcRun:
    """h2load's figures for gRPC calls of `frame` to `url`, one stream per connection at a time."""
    command = ["taskset", "-c", CLIENT_CORE, "h2load", "-t1", f"-c{connections}", "-m1", f"-D{duration}"]
    command += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-H", f"authorization: Bearer {API_KEY}"]
    command += ["-d", str(frame), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / elapsed
    timing = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", output)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", output)
    return GrpcRun(
        requests_per_second=float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output).group(1)),
        mean_ms=milliseconds(timing.group(3)),
        max_ms=milliseconds(timing.group(2)),
        errors=int(done.group(2)) + int(done.group(3)),
        client_cpu=cpu,
    )


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def post_raw(url: str, body: bytes, timeout: float = 600) -> tuple[int, float]:
    """The status of a POST of `body` and the seconds it took."""
    request = urllib.request.Request(url, data=body, headers=HEADERS, method="POST")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        error.read()
        status = error.code
    return status, time.monotonic() - started


def large_requests(servers: dict[str, tuple[subprocess.Popen, str]], rows: int) -> None:
    """Memory and time under large TF Serving requests, server by server."""
    import random

    generator = random.Random(19)
    instances = [
        [round(generator.uniform(4.3, 7.9), 1), round(generator.uniform(2.0, 4.4), 1),
         round(generator.uniform(1.0, 6.9), 1), round(generator.uniform(0.1, 2.5), 1)]
        for _ in range(rows)
    ]
    body = json.dumps({"instances": instances}, separators=(",", ":")).encode()
    del instances
    print(f"\nlarge requests: {rows:,} iris rows in TF Serving's instances ({len(body) / 1e6:.1f} MB), iris version 2")
    header = f"{'server':<14} {'idle MB':>8} {'one s':>6} {'six: peak MB':>12} {'answered':>9} {'503':>4} {'other':>5} {'after 1 s':>9} {'after 5 s':>9}"
    print(header)
    print("-" * len(header))
    for name, (process, url) in servers.items():
        path = url + "/v1/models/iris/versions/2:predict"
        idle = resident_mb(process.pid)
        status, one = post_raw(path, body)
        if status != 200:
            print(f"{name:<14} one request was answered {status}")
            continue
        peak, stop = [resident_mb(process.pid)], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], resident_mb(process.pid))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        statuses: list[int] = []
        senders = [threading.Thread(target=lambda: statuses.append(post_raw(path, body)[0])) for _ in range(6)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        stop.set()
        sampler.join()
        time.sleep(1)
        after_1 = resident_mb(process.pid)
        time.sleep(4)
        after_5 = resident_mb(process.pid)
        answered, refused = statuses.count(200), statuses.count(503)
        print(
            f"{name:<14} {idle:>8.0f} {one:>6.2f} {peak[0]:>12.0f} {answered:>9} {refused:>4} "
            f"{6 - answered - refused:>5} {after_1:>9.0f} {after_5:>9.0f}",
            flush=True,
        )


def start(name: str, command: list[str], env: dict[str, str], health: str) -> subprocess.Popen:
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *command],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    wait_until_up(health, process)
    print(f"{name}: pid {process.pid}, pinned to core {SERVER_CORE}", flush=True)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated (default 1,16,64)")
    parser.add_argument("--skip-python", action="store_true", help="only worker serve")
    parser.add_argument("--large-rows", type=int, default=800_000, help="rows of the large requests (0: skip them)")
    parser.add_argument(
        "--without-keys",
        action="store_true",
        help="also time worker serve open to all (ALLOW_UNAUTHENTICATED): what checking the API key costs",
    )
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    if shutil.which("wrk") is None or shutil.which("h2load") is None:
        sys.exit("wrk or h2load is missing: apt-get install wrk nghttp2-client")
    if not WORKER.exists():
        sys.exit(f"{WORKER} is missing: cargo build --release --workspace")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores: one for the server, one for the load generator")

    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        port, grpc_port = free_port(), free_port()
        sluice = f"http://127.0.0.1:{port}"
        servers["worker serve"] = (
            start(
                "worker serve",
                [str(WORKER), "serve", "--model-repository", str(REPOSITORY), "--port", str(port), "--grpc-port", str(grpc_port)],
                {"INFERENCE_THREADS": "1", "RUST_LOG": "warn", "API_KEYS": API_KEY},
                f"{sluice}/v2/health/ready",
            ),
            sluice,
        )
        if args.without_keys:
            port = free_port()
            open_url = f"http://127.0.0.1:{port}"
            servers["no key"] = (
                start(
                    "worker serve, no key",
                    [str(WORKER), "serve", "--model-repository", str(REPOSITORY), "--port", str(port), "--grpc-port", "0"],
                    {"INFERENCE_THREADS": "1", "RUST_LOG": "warn", "ALLOW_UNAUTHENTICATED": "true"},
                    f"{open_url}/v2/health/ready",
                ),
                open_url,
            )
        if not args.skip_python:
            port = free_port()
            fastapi = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "uvicorn", "bench.fastapi_server:app", "--port", str(port)]
            command += ["--log-level", "warning", "--no-access-log"]
            servers["FastAPI"] = (
                start("FastAPI + onnxruntime", command, {"MODEL_REPOSITORY": str(REPOSITORY)}, f"{fastapi}/ping"),
                fastapi,
            )

        # Both answer the same, before anything is timed.
        for case, path, body in CASES:
            answers = {name: post(url + path, body)["predictions"] for name, (_, url) in servers.items()}
            print(f"{case}: {json.dumps(answers['worker serve'])}")
            ours = numbers(answers["worker serve"])
            for name, answer in answers.items():
                theirs = numbers(answer)
                if len(theirs) != len(ours) or any(abs(a - b) > 1e-5 + 1e-4 * abs(a) for a, b in zip(ours, theirs)):
                    sys.exit(f"{case}: {name} answers {json.dumps(answer)}")

        with tempfile.TemporaryDirectory() as scripts:
            scripts = Path(scripts)
            print(f"\nwrk's ceiling: GET /ping of worker serve, {args.duration} s each")
            for c in connections:
                run = wrk(f"{sluice}/ping", c, args.duration, None, scripts)
                print(f"  {c:>3} connections: {run.requests_per_second:>9,.0f} req/s, wrk used {run.client_cpu:.0%} of its core")

            print(f"\nTF Serving predict, one row per request, {args.duration} s each")
            header = f"{'case':<16} {'conns':>5} {'server':<14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'wrk cpu':>7}"
            print(header)
            print("-" * len(header))
            results: dict[tuple[str, int, str], Run] = {}
            for case, path, body in CASES:
                for c in connections:
                    for name, (_, url) in servers.items():
                        run = wrk(url + path, c, args.duration, body, scripts)
                        results[(case, c, name)] = run
                        print(
                            f"{case:<16} {c:>5} {name:<14} {run.requests_per_second:>9,.0f} {run.p50_ms:>8.3f} "
                            f"{run.p99_ms:>8.3f} {run.errors:>6} {run.client_cpu:>7.0%}",
                            flush=True,
                        )

            print(f"\nKServe v2 gRPC ModelInfer (raw tensors), one row per call, {args.duration} s each, h2load")
            header = f"{'case':<16} {'conns':>5} {'req/s':>9} {'mean ms':>8} {'max ms':>8} {'errors':>6} {'h2load cpu':>10} {'/ REST':>7}"
            print(header)
            print("-" * len(header))
            grpc_cases = [
                ("iris v1 logreg", "iris", "1", "features", [[5.9, 3.0, 5.1, 1.8]]),
                ("iris v2 mlp", "iris", "2", "features", [[5.9, 3.0, 5.1, 1.8]]),
            ]
            for case, model, version, name, rows in grpc_cases:
                frame = scripts / f"{model}-{version}.grpc"
                frame.write_bytes(model_infer_frame(model, version, name, rows))
                infer = f"http://127.0.0.1:{grpc_port}/inference.GRPCInferenceService/ModelInfer"
                check_grpc(infer, frame)
                for c in connections:
                    run = h2load(infer, c, args.duration, frame)
                    rest = results[(case, c, "worker serve")]
                    print(
                        f"{case:<16} {c:>5} {run.requests_per_second:>9,.0f} {run.mean_ms:>8.3f} {run.max_ms:>8.3f} "
                        f"{run.errors:>6} {run.client_cpu:>10.0%} {run.requests_per_second / rest.requests_per_second:>6.2f}x",
                        flush=True,
                    )

        if "FastAPI" in servers:
            print("\nworker serve / FastAPI, requests per second (and p99 latency FastAPI / worker serve)")
            for case, _, _ in CASES:
                ratios = []
                for c in connections:
                    ours, theirs = results[(case, c, "worker serve")], results[(case, c, "FastAPI")]
                    ratios.append(
                        f"{c} conns {ours.requests_per_second / theirs.requests_per_second:.1f}x "
                        f"({theirs.p99_ms / ours.p99_ms:.1f}x)"
                    )
                print(f"  {case:<16} " + ", ".join(ratios))
        if "no key" in servers:
            print("\nworker serve checking its API key / open to all, requests per second")
            for case, _, _ in CASES:
                ratios = [
                    f"{c} conns {results[(case, c, 'worker serve')].requests_per_second / results[(case, c, 'no key')].requests_per_second:.3f}x"
                    for c in connections
                ]
                print(f"  {case:<16} " + ", ".join(ratios))
        print("\npeak resident memory: " + ", ".join(f"{name} {resident_peak_mb(p.pid):.0f} MB" for name, (p, _) in servers.items()))
        if args.large_rows:
            large_requests(servers, args.large_rows)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
