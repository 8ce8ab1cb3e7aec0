"""``python -m bench.peers`` (``make bench-peers``): tfclassify against NVIDIA
Triton Inference Server on the same model and the same load, one table.

The peer is Triton's own server through PyTriton (``nvidia-pytriton``): its C++
gRPC front end and dynamic batcher, with the same SavedModel called in Python
(``tf.saved_model.load``) on each batch it forms (bench/pytriton_serve.py). It
runs in its own environment, .venv-triton/, which bench/get_pytriton.sh builds
on first use (CPython 3.12 with a shared libpython: the backend stub loads it).

Both servers run at once on the benchmark model (trained as ``make bench``
does unless --model-repo names a repository holding ``fashion_mnist``) and take
the same load in alternation, round by round (the order swaps each round):
Open Inference Protocol ``ModelInfer`` over gRPC from bench/oip_load.py, for
single images from 1 and from 64 concurrent callers and for 1,024-image
requests from one caller, as prebuilt request bytes (the least client CPU), and
the single images again through ``tritonclient.grpc.aio``'s ``infer`` (what a
user of Triton's client sends). Each row shows the median of the rounds, and ours ÷
Triton's (above 1 is better for requests/s, below 1 for latencies). Extra
arguments after ``--`` go to ``tfclassify serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.__main__ import MODEL, start_server, train_model

ROOT = Path(__file__).resolve().parents[1]
TRITON_VENV = Path(os.environ.get("TRITON_VENV", ROOT / ".venv-triton"))
# (label, concurrent callers, images per request, bench.oip_load's client)
ROWS = (
    ("1 image, 1 caller", 1, 1, "bytes"),
    ("1 image, 64 callers", 64, 1, "bytes"),
    ("1,024 images, 1 caller", 1, 1024, "bytes"),
    ("1 image, 1 caller, tc", 1, 1, "tritonclient"),
    ("1 image, 64 callers, tc", 64, 1, "tritonclient"),
)
SERVERS = ("tfclassify", "triton")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="use this repository (must hold fashion_mnist)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds [default: %(default)s]")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load [default: %(default)s]")
    parser.add_argument("--max-queue-delay-us", type=int, default=100,
                        help="Triton's dynamic batcher's max_queue_delay_microseconds [default: %(default)s]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("serve_args", nargs="*", help="extra `tfclassify serve` arguments (after --)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if subprocess.run(["bash", str(ROOT / "bench" / "get_pytriton.sh")]).returncode != 0:
        raise SystemExit("bench.peers: no Triton environment (see the line above)")
    with tempfile.TemporaryDirectory(prefix="tfclassify-bench-peers-") as tmp:
        repo = args.model_repo or train_model(Path(tmp) / "models")
        version_dir = max((p for p in (repo / MODEL).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        ours, address, _ = start_server(repo, Path(tmp), args.serve_args)
        triton = None
        try:
            triton, triton_address = start_triton(version_dir, Path(tmp), args.max_queue_delay_us)
            addresses = {"tfclassify": address, "triton": triton_address}
            rounds = _rounds(addresses, args.rounds, args.seconds)
        finally:
            ours.terminate()
            ours.wait(30)
            if triton is not None:
                stop_triton(triton)
    results = _medians(rounds)
    print(_table(results, args.rounds, args.seconds))
    if args.json:
        args.json.write_text(json.dumps({"median": results, "rounds": rounds}, indent=2) + "\n")
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_triton(version_dir: Path, tmp: Path, max_queue_delay_us: int) -> tuple[subprocess.Popen, str]:
    """Start bench/pytriton_serve.py in the peer's environment; returns the process and its gRPC address once
    the model is ready. Its own session, so that stop_triton can reach tritonserver and the backend stub too."""
    python = TRITON_VENV / "bin" / "python"
    libdir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            check=True, capture_output=True, text=True).stdout.strip()
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)}
    grpc_port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    log = (tmp / "triton.log").open("w")
    proc = subprocess.Popen(
        [str(python), "-P", str(ROOT / "bench" / "pytriton_serve.py"), str(version_dir), MODEL,
         str(grpc_port), str(http_port), str(metrics_port), "--max-queue-delay-us", str(max_queue_delay_us)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    ready = f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/ready"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(ready, timeout=2) as answer:
                if answer.status == 200:
                    return proc, f"127.0.0.1:{grpc_port}"
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_triton(proc)
            tail = (tmp / "triton.log").read_text()[-3000:]
            raise SystemExit(f"bench.peers: the Triton peer did not start; its log ends:\n{tail}")
        time.sleep(0.25)


def stop_triton(proc: subprocess.Popen) -> None:
    """SIGTERM (pytriton_serve.py stops tritonserver on it), then SIGKILL to its whole session if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the session is left: tritonserver, the backend stub
    except ProcessLookupError:
        pass
    proc.wait()


def _rounds(addresses: dict[str, str], rounds: int, seconds: float) -> list[dict]:
    """``rounds`` rounds of every row on both servers, one after the other; the order swaps every round."""
    out = []
    for i in range(rounds):
        order = SERVERS if i % 2 == 0 else SERVERS[::-1]
        one: dict[str, dict] = {}
        for label, concurrency, images, client in ROWS:
            for server in order:
                cmd = [sys.executable, "-m", "bench.oip_load", addresses[server], MODEL, "--concurrency",
                       str(concurrency), "--images", str(images), "--seconds", str(seconds), "--client", client]
                result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                if result["errors"]:
                    print(f"bench.peers: {server}, {label}: errors {result['errors']}", file=sys.stderr)
                one.setdefault(label, {})[server] = result
        print(f"bench.peers: round {i + 1} of {rounds} done", file=sys.stderr)
        out.append(one)
    return out


def _medians(rounds: list[dict]) -> dict:
    """Per row and server, the median over the rounds of each of requests/s, images/s, p50 and p99."""
    keys = ("requests_per_second", "images_per_second", "p50_ms", "p99_ms")
    return {label: {server: {k: statistics.median(r[label][server][k] for r in rounds) for k in keys}
                    for server in SERVERS}
            for label, *_ in ROWS}


def _table(results: dict, rounds: int, seconds: float) -> str:
    lines = [
        f"OIP ModelInfer over gRPC, median of {rounds} interleaved rounds of {seconds:g} s (latencies in ms; "
        "the 1,024-image row's rate in images/s)",
        f"{'':<24}{'tfclassify':>24}{'Triton (PyTriton)':>26}{'tfclassify ÷ Triton':>26}",
        f"{'':<24}" + f"{'rate':>10}{'p50':>7}{'p99':>7}" + f"{'rate':>12}{'p50':>7}{'p99':>7}"
        + f"{'rate':>12}{'p50':>7}{'p99':>7}",
    ]
    for label, _, images, _ in ROWS:
        rate = "images_per_second" if images > 1 else "requests_per_second"
        ours, peer = results[label]["tfclassify"], results[label]["triton"]
        lines.append(
            f"{label:<24}{ours[rate]:>10,.0f}{ours['p50_ms']:>7.2f}{ours['p99_ms']:>7.2f}"
            f"{peer[rate]:>12,.0f}{peer['p50_ms']:>7.2f}{peer['p99_ms']:>7.2f}"
            f"{ours[rate] / peer[rate]:>12.2f}{ours['p50_ms'] / peer['p50_ms']:>7.2f}"
            f"{ours['p99_ms'] / peer['p99_ms']:>7.2f}"
        )
    lines.append("tc: the calls made with tritonclient.grpc.aio's infer (a numpy array in, the answer parsed); the "
                 "rows above send prebuilt request bytes")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
