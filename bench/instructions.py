"""``make bench-instructions``: the serving path's own cost per single-image request, in CPU instructions.

Timings on our shared 2-core machines swing by 20% from one minute to the next, more than most changes to
the serving code move them. Instructions do not: this bench runs the path a ``Classify`` request takes
after gRPC has decoded it (the meter, the data plane, the batching queue, the hand-off to the inference
thread and back, the answer) in one process under valgrind's callgrind, which counts the instructions
each thread executes whatever else the machine is doing. The model's TensorFlow call is replaced by
zeros of the right shapes, so what is counted is tfclassify's code and the Python it runs on.

It runs the process twice, with ``--requests`` and three times as many, and divides the difference by
the extra requests, so start-up (TensorFlow's import, loading, warm-up) cancels out. One caller sends
the requests one after another: each request is its own batch, the costliest case. Needs valgrind
(Debian: ``apt-get install valgrind``); about 5 minutes, both runs at once.

Usage: python -m bench.instructions [--model-repo REPO] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = "fashion_mnist"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="a repository holding fashion_mnist (else one is trained)")
    parser.add_argument("--requests", type=int, default=400, help="requests of the shorter run [default: %(default)s]")
    parser.add_argument("--drive", type=int, metavar="N", help=argparse.SUPPRESS)  # inside valgrind: send N requests
    args = parser.parse_args()
    if args.drive is not None:
        asyncio.run(drive(args.model_repo, args.drive))
        return 0
    if shutil.which("valgrind") is None:
        print("bench.instructions: valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="tfclassify-instructions-") as tmp:
        from bench.__main__ import train_model

        repo = args.model_repo or train_model(Path(tmp) / "models")
        counts = (args.requests, 3 * args.requests)
        runs = [_start_under_callgrind(repo, n, Path(tmp) / f"run{n}") for n in counts]
        totals = []
        for proc, out in runs:
            if proc.wait() != 0:
                raise SystemExit(f"bench.instructions: the run under valgrind failed:\n{proc.stderr.read()[-2000:]}")
            totals.append(_thread_totals(out))
    extra = counts[1] - counts[0]
    loop = (totals[1]["main"] - totals[0]["main"]) / extra
    every = (totals[1]["all"] - totals[0]["all"]) / extra
    width = 44
    print(f"{'measure (per single-image request, 1 caller)':<{width}}  instructions")
    print("-" * (width + 16))
    print(f"{'event-loop thread':<{width}}  {loop:>12,.0f}")
    print(f"{'all threads':<{width}}  {every:>12,.0f}")
    print(f"({extra:,} requests between the two runs; {counts[0]:,} and {counts[1]:,} measured)")
    return 0


def _start_under_callgrind(repo: Path, requests: int, out: Path) -> tuple[subprocess.Popen, Path]:
    out.mkdir()
    cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--dump-instr=no", "--collect-jumps=no",
           f"--callgrind-out-file={out}/callgrind.%p", sys.executable, "-m", "bench.instructions",
           "--model-repo", str(repo), "--drive", str(requests)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out


def _thread_totals(out: Path) -> dict[str, int]:
    """Instructions of the main thread (the event loop: callgrind's thread 1) and of all threads."""
    totals = {}
    for f in out.glob("callgrind.*-*"):
        match = re.search(r"^(?:summary|totals): (\d+)", f.read_text(errors="replace"), re.M)
        if match:
            totals[int(f.name.rsplit("-", 1)[1])] = int(match.group(1))
    return {"main": totals[1], "all": sum(totals.values())}


class _Context:
    """What the servicer asks of a grpc.aio context, for a client with a deadline and no metadata."""

    def time_remaining(self) -> float:
        return 30.0

    def invocation_metadata(self) -> tuple:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    async def abort(self, code, details: str) -> None:
        raise RuntimeError(f"{code.name}: {details}")


async def drive(repo: Path, requests: int) -> None:
    """Inside valgrind: serve ``repo`` with a no-op model and send ``requests`` single-image Classify calls."""
    import numpy as np

    from tfclassify.common.tensors import to_tensor_proto
    from tfclassify.server.apis.classifier import ClassifierServicer
    from tfclassify.server.app import ClassifierServer
    from tfclassify.server.runtime.model_runtime import ModelRuntime
    from tfclassify.server.settings import ServerSettings
    from tfclassify.v1 import classifier_pb2 as pb

    real_run = ModelRuntime.run
    shapes: dict[tuple[str, int], dict] = {}

    def zeros(self: ModelRuntime, images: np.ndarray) -> dict[str, np.ndarray]:
        # The real call while the version is probed and warmed up; zeros of its shapes afterwards.
        key = (self.name, self.version)
        if not self.outputs or key not in shapes:
            out = real_run(self, images)
            if self.outputs:
                shapes[key] = {k: (v.shape[1:], v.dtype) for k, v in out.items()}
            return out
        return {k: np.zeros((len(images), *shape), dtype) for k, (shape, dtype) in shapes[key].items()}

    ModelRuntime.run = zeros
    server = ClassifierServer(ServerSettings(model_repo=repo, host="127.0.0.1", grpc_port=0, http_port=-1, metrics_port=-1))
    await server.start()
    servicer = ClassifierServicer(server.dataplane, server.manager, server.metering)
    request = pb.ClassifyRequest(model_spec=pb.ModelSpec(name=MODEL))
    to_tensor_proto(np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8), out=request.tensor)
    data, context = request.SerializeToString(), _Context()
    for _ in range(requests):
        await servicer.Classify(pb.ClassifyRequest.FromString(data), context)
    await server.stop()


if __name__ == "__main__":
    sys.exit(main())
