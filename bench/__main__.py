"""``python -m bench`` (``make bench``): serving speed on this machine, one table.

Trains the Fashion-MNIST 784-512-10 MLP (1 epoch: speed does not depend on
accuracy) unless --model-repo names a repository holding ``fashion_mnist``,
then measures, in one run on the same machine:

0. the floor: a gRPC server that does nothing, under the same load generator;
1. the in-process baseline: the server's model runtime called directly, on its best batch size;
2. ``tfclassify score`` over gRPC on the 60,000 training images, and its ratio to
   (1), both measured in alternation, three rounds (the median round is shown);
3. single-image ``Classify`` from 64 concurrent callers: requests/s, p50, p99,
   and the mean batch size the server formed; and the server's CPU time per
   request by kind of thread, beside the floor's (steadier than requests/s on
   a shared machine);
4. single-image latency from 1 caller, and its difference from one in-process call;
5. the server's resident memory after loading;
6. the first requests after the server reports ready, with and without warm-up;
7. 1,024-image requests through every API with its own client, and their ratio
   to the in-process baseline at batch 1,024, both measured in alternation,
   three rounds (each API's median round is shown);
8. row 3's load on ``--workers N`` servers, against one process.

The server, the load generators and the baseline are separate processes.
Extra arguments after ``--`` go to ``tfclassify serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfclassify.client import ClassifierClient
from tfclassify.server.runtime.memory import resident_mib

BIN = Path(sys.executable).parent
MODEL = "fashion_mnist"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="use this repository (must hold fashion_mnist)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load test")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--workers", default="2", help="comma-separated `serve --workers` counts to load-test at "
                        "64 callers beside one process (e.g. 2,4,8 on a 16-core machine) [default: %(default)s]")
    parser.add_argument("serve_args", nargs="*", help="extra `tfclassify serve` arguments (after --)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="tfclassify-bench-") as tmp:
        repo = args.model_repo or train_model(Path(tmp) / "models")
        version_dir = max((p for p in (repo / MODEL).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        results = {"baseline": _json_of([sys.executable, "-m", "bench.inprocess", str(version_dir)])}
        results["noop"] = _noop_floor(Path(tmp), args.seconds)
        server, address, pid = start_server(repo, Path(tmp), args.serve_args)
        try:
            results["rss_mib"] = resident_mib(pid)
            results["score"] = _score_rounds(address, version_dir, results["baseline"]["best_batch_size"])
            results["apis"] = _api_rounds(address, version_dir)
            results["c64"] = _load(address, 64, args.seconds, pid)
            results["c1"] = _load(address, 1, args.seconds, pid)
        finally:
            server.terminate()
            server.wait(30)
        results["workers"] = {}
        for count in (int(n) for n in args.workers.split(",") if n.strip()):
            server, address, pid = start_server(repo, Path(tmp), [*args.serve_args, "--workers", str(count)])
            try:
                results["workers"][count] = _load(address, 64, args.seconds, pid)
            finally:
                server.terminate()
                server.wait(60)
        results["first_warm"] = _first_requests(repo, Path(tmp), args.serve_args)
        results["first_cold"] = _first_requests(repo, Path(tmp), [*args.serve_args, "--warmup-batch-sizes", ""])
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def train_model(repo: Path) -> Path:
    """Train the benchmark model (1 epoch) into ``repo``."""
    print("bench: training the 784-512-10 MLP for 1 epoch ...", file=sys.stderr)
    subprocess.run(
        [str(BIN / "tfclassify"), "train", "--dataset", "fashion_mnist", "--model-repo", str(repo), "--epochs", "1"],
        check=True, stdout=subprocess.DEVNULL,
    )
    return repo


def start_server(repo: Path, tmp: Path, extra: list[str]) -> tuple[subprocess.Popen, str, int]:
    """Start ``tfclassify serve`` on ``repo``; returns the process, its address and pid once it is ready."""
    port_file = tmp / "ports.json"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [str(BIN / "tfclassify"), "serve", "--model-repo", str(repo), "--host", "127.0.0.1", "--grpc-port", "0",
         "--http-port", "0", "--metrics-port", "0", "--port-file", str(port_file), "--log-level", "WARNING", *extra],
    )
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bench: the server did not start")
        time.sleep(0.05)
    ports = json.loads(port_file.read_text())
    address = f"127.0.0.1:{ports['grpc_port']}"
    with ClassifierClient(address) as client:
        client.wait_for_ready(60)
    start_server.metrics_port = ports["metrics_port"]  # type: ignore[attr-defined]
    start_server.http_port = ports["http_port"]  # type: ignore[attr-defined]
    return proc, address, proc.pid


def _first_requests(repo: Path, tmp: Path, extra: list[str]) -> dict:
    """Latency of the first 4,096-image and single-image requests after the server is ready."""
    import numpy as np

    server, address, _ = start_server(repo, tmp, extra)
    try:
        with ClassifierClient(address) as client:
            out = {}
            for name, n in (("batch_4096_ms", 4096), ("single_ms", 1)):
                t0 = time.perf_counter()
                client.classify(np.zeros((n, 28, 28), np.uint8), MODEL)
                out[name] = (time.perf_counter() - t0) * 1e3
            return out
    finally:
        server.terminate()
        server.wait(30)


def _score_rounds(address: str, version_dir: Path, batch_size: int, rounds: int = 3) -> dict:
    """Scoring and the in-process baseline in alternation, so both see the same machine."""
    pairs = []
    for _ in range(rounds):
        in_process = _in_process_rate(version_dir, batch_size)
        out = subprocess.run(
            [str(BIN / "tfclassify"), "score", "--server", address, "--model", MODEL, "--dataset", "fashion_mnist",
             "--split", "train", "--no-progress"],
            check=True, capture_output=True, text=True,
        ).stdout
        scored = float(re.search(r"([\d,]+) images/s", out).group(1).replace(",", ""))
        pairs.append((scored / in_process, scored, in_process))
    ratio, scored, baseline = _median_round(pairs)
    return {"images_per_second": scored, "baseline_images_per_second": baseline, "ratio": ratio,
            "all_rounds": pairs, "images": 60000}


def _api_rounds(address: str, version_dir: Path, batch_size: int = 1024, rounds: int = 3) -> dict:
    """Every API's batched rate and the in-process baseline at the same batch size, in alternation: the
    machine's speed moves from one minute to the next, so a ratio is only taken within one round."""
    by_api: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(rounds):
        in_process = _in_process_rate(version_dir, batch_size)
        rates = _json_of([sys.executable, "-m", "bench.apis", address, MODEL, "--images", str(batch_size),
                          "--seconds", "2"])
        for api, rate in rates.items():
            if api != "images":
                by_api.setdefault(api, []).append((rate / in_process, rate, in_process))
    out = {}
    for api, pairs in by_api.items():
        ratio, rate, in_process = _median_round(pairs)
        out[api] = {"images_per_second": rate, "ratio": ratio, "baseline_images_per_second": in_process,
                    "all_rounds": pairs}
    return out


def _in_process_rate(version_dir: Path, batch_size: int) -> float:
    """The in-process baseline's images/s at ``batch_size``, measured now (in a process of its own)."""
    return _json_of([sys.executable, "-m", "bench.inprocess", str(version_dir), str(batch_size)])["best_images_per_second"]


def _median_round(rounds: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The round of median ratio among (ratio, rate, baseline) rounds."""
    return sorted(rounds)[len(rounds) // 2]


def _noop_floor(tmp: Path, seconds: float) -> dict:
    port_file = tmp / "noop.json"
    proc = subprocess.Popen([sys.executable, "-m", "bench.noop_server", str(port_file)])
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench: the no-op server did not start")
            time.sleep(0.05)
        address = f"127.0.0.1:{json.loads(port_file.read_text())['grpc_port']}"
        load = [sys.executable, "-m", "bench.load", address, MODEL, "--seconds", str(seconds)]
        threads_before = thread_cpu_seconds(proc.pid)
        c64 = _json_of([*load, "--concurrency", "64"])
        c64["server_thread_cpu_seconds"] = _minus(thread_cpu_seconds(proc.pid), threads_before)
        return {"c64": c64, "c1": _json_of([*load, "--concurrency", "1"])}
    finally:
        proc.terminate()
        proc.wait(30)


def _load(address: str, concurrency: int, seconds: float, pid: int) -> dict:
    port = start_server.metrics_port  # type: ignore[attr-defined]
    before = histogram_totals(port, "tfclassify_batch_size_images")
    cpu_before, threads_before = cpu_seconds(pid), thread_cpu_seconds(pid)
    result = _json_of([sys.executable, "-m", "bench.load", address, MODEL, "--concurrency", str(concurrency),
                       "--seconds", str(seconds)])
    after = histogram_totals(port, "tfclassify_batch_size_images")
    batches = after[1] - before[1]
    result["mean_batch_size"] = (after[0] - before[0]) / batches if batches else 0.0
    result["server_cpu_seconds"] = cpu_seconds(pid) - cpu_before
    result["server_thread_cpu_seconds"] = _minus(thread_cpu_seconds(pid), threads_before)
    return result


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """The CPU time (user + system, s) process ``pid``'s threads have used, by kind: the event loop (the main
    thread), TensorFlow's inter-op pool (threads named ``tf_*``: the graphs of large batches), gRPC core's, and
    the other threads: the inference threads (the TensorFlow calls, and the whole graph of a small batch),
    TensorFlow's intra-op pool (which the OS knows by no name of its own), grpc.aio's poller and the HTTP
    server. Threads are told apart by the name the OS knows them by."""
    totals = dict.fromkeys(THREAD_KINDS, 0.0)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            seconds = _stat_cpu_seconds(task / "stat")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        if task.name == str(pid):
            kind = "event loop"
        elif comm.startswith("tf_"):
            kind = "TensorFlow inter-op"
        elif comm.startswith(("event_engine", "grpc_")):
            kind = "gRPC core"
        else:
            kind = "other threads"
        totals[kind] += seconds
    return totals


THREAD_KINDS = ("event loop", "other threads", "TensorFlow inter-op", "gRPC core")


def _minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def histogram_totals(metrics_port: int, name: str) -> tuple[float, float]:
    """(sum, count) of the server's histogram ``name`` over all its label sets, from its /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for s in family.samples:
                if s.name.endswith("_sum"):
                    total += s.value
                elif s.name.endswith("_count"):
                    count += s.value
    return total, count


def _json_of(cmd: list[str]) -> dict:
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, s) process ``pid`` has used."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def _stat_cpu_seconds(stat: Path) -> float:
    """utime + stime (s) from a process's or thread's ``/proc/.../stat`` (fields after the command's ")")."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_request(load: dict) -> str:
    """The server's CPU time per answered request under ``load``, by kind of thread, in microseconds."""
    threads, n = load["server_thread_cpu_seconds"], load["requests"]
    parts = ", ".join(f"{kind} {threads[kind] / n * 1e6:,.0f}" for kind in THREAD_KINDS if threads.get(kind))
    return f"{sum(threads.values()) / n * 1e6:,.0f} us ({parts})"


def _table(r: dict) -> str:
    base, score, c64, c1, noop = r["baseline"], r["score"], r["c64"], r["c1"], r["noop"]
    rows = [
        ("0. no-op gRPC server (the floor)", f"64 callers: {noop['c64']['requests_per_second']:,.0f} req/s, "
         f"p99 {noop['c64']['p99_ms']:.1f} ms", f"1 caller: p50 {noop['c1']['p50_ms']:.2f} ms"),
        ("1. in-process runtime, best batch", f"{base['best_images_per_second']:,.0f} images/s (batch {base['best_batch_size']})",
         "by batch size: " + ", ".join(f"{k}: {v:,.0f}" for k, v in base["images_per_second"].items()) + " images/s"),
        ("2. tfclassify score over gRPC", f"{score['images_per_second']:,.0f} images/s",
         f"ratio to (1) in the same round: {score['ratio']:.2f} (goal >= 0.9; baseline then "
         f"{score['baseline_images_per_second']:,.0f})"),
        ("3. 64 callers, single images", f"{c64['requests_per_second']:,.0f} req/s, p50 {c64['p50_ms']:.1f} ms, "
         f"p99 {c64['p99_ms']:.1f} ms", f"{c64['requests_per_second'] / noop['c64']['requests_per_second']:.2f} of (0), "
         f"p99 {c64['p99_ms'] / noop['c64']['p99_ms']:.1f}x; mean batch {c64['mean_batch_size']:.1f}; errors "
         f"{c64['errors'] or 0} (goal >= 0.6 of (0), p99 <= 1.5x)"),
        ("3. server CPU per request (3)", _cpu_per_request(c64), "floor (0): " + _cpu_per_request(noop["c64"])),
        ("4. 1 caller, single image", f"p50 {c1['p50_ms']:.2f} ms (in-process batch 1: {base['batch1_p50_ms']:.2f} ms)",
         f"difference {c1['p50_ms'] - base['batch1_p50_ms']:+.2f} ms (goal <= +0.5 ms)"),
        ("5. server RSS after load", f"{r['rss_mib']:.0f} MiB", ""),
        ("6. first requests after ready", f"warmed up: {r['first_warm']['batch_4096_ms']:.1f} ms (4,096 images), "
         f"{r['first_warm']['single_ms']:.2f} ms (1)", f"without warm-up: {r['first_cold']['batch_4096_ms']:.1f} ms, "
         f"{r['first_cold']['single_ms']:.2f} ms"),
    ]
    goals = {"tfclassify": "", "tfserving_predict": " (goal >= 0.8)", "oip_raw": " (goal >= 0.8)",
             "oip_classification": " (goal >= 0.6)"}
    names = {"tfclassify": "our client, Classify", "tfserving_predict": "TF Serving stub, Predict",
             "oip_raw": "tritonclient, raw outputs", "oip_classification": "tritonclient, class_count=1"}
    for api, goal in goals.items():
        api_round = r["apis"][api]
        rows.append((f"7. 1,024 images per call: {names[api]}", f"{api_round['images_per_second']:,.0f} images/s",
                     f"ratio to in-process batch 1,024 in the same round: {api_round['ratio']:.2f}{goal} "
                     f"(baseline then {api_round['baseline_images_per_second']:,.0f})"))
    for count, load in r["workers"].items():
        rows.append((f"8. 64 callers, --workers {count}", f"{load['requests_per_second']:,.0f} req/s, "
                     f"p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms",
                     f"{load['requests_per_second'] / c64['requests_per_second']:.2f}x one process (3); "
                     f"errors {load['errors'] or 0}"))
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    lines = [f"{'measure':<{w0}}  {'result':<{w1}}  notes", "-" * (w0 + w1 + 40)]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
