"""``python -m bench.soak`` (``make soak``): mixed traffic for a long time, with a hot reload, a rollback and a
config change in the middle.

The server serves ``fashion_mnist`` from a config file (``--model-config``, polled every 0.5 s). The traffic
is a mix of every kind of call: single images and 256-image batches through our ``Classify``, streams of
single images (``ClassifyStream``), TensorFlow Serving ``Predict`` and Open Inference ``ModelInfer``. Its
capacity is measured first (the same mix, closed loop); the soak then sends the mix open loop at
``--load`` (0.8) of it, over ``--clients`` (1) connections in turn (several: as several client processes
would). At 1/4 of the time version 2 is added (hot reload: unversioned calls move to it), at 1/2 it is
rolled back (version 2 unloaded), at 3/4 the batching settings change. Every call must succeed.

The tables show failures by status; the server's RSS at the start, peak and end, and settled (11 s after the
last answer, once its heap trim has run); and per eighth of the soak the p99, the failed calls, the share of
the machine's CPU time the hypervisor gave to other guests (on a shared VM that is capacity lost while the
rate stays the same) and the versions that answered single images. The capacity is measured again after
the soak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.__main__ import MODEL, cpu_seconds, start_server, train_model
from tfclassify.common.tensors import to_tensor_proto
from tfclassify.inference import grpc_service_pb2 as oip
from tfclassify.server.runtime.memory import resident_mib
from tfclassify.v1 import classifier_pb2 as pb

CONFIG = """batching {{ max_batch_size: {batch} }}
models {{
  name: "{model}"
  base_path: "{base}"
  version_policy {{ specific {{ {versions} }} }}
  version_labels {{ key: "stable" value: 1 }}
}}
"""
STREAM_LENGTH = 10


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _classify(n: int) -> bytes:
    request = pb.ClassifyRequest(model_spec=pb.ModelSpec(name=MODEL))
    to_tensor_proto(_images(n), out=request.tensor)
    return request.SerializeToString()


def _predict(n: int) -> bytes:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    tensor = request.inputs["images"]
    tensor.dtype = 4  # DT_UINT8
    for d in (n, 28, 28):
        tensor.tensor_shape.dim.add(size=d)
    tensor.tensor_content = _images(n).tobytes()
    return request.SerializeToString()


def _infer(n: int) -> bytes:
    tensor = oip.ModelInferRequest.InferInputTensor(name="images", datatype="UINT8", shape=[n, 28, 28])
    return oip.ModelInferRequest(model_name=MODEL, inputs=[tensor], raw_input_contents=[_images(n).tobytes()]) \
        .SerializeToString()


@dataclass(frozen=True)
class Kind:
    """One kind of call in the mix: its method, request, and its share of the calls."""

    name: str
    method: str
    body: bytes
    share: float
    stream: bool = False


def mix() -> list[Kind]:
    return [
        Kind("single", "/tfclassify.v1.Classifier/Classify", _classify(1), 0.45),
        Kind("batch256", "/tfclassify.v1.Classifier/Classify", _classify(256), 0.05),
        Kind("stream", "/tfclassify.v1.Classifier/ClassifyStream", _classify(1), 0.05, stream=True),
        Kind("tfs_predict", "/tensorflow.serving.PredictionService/Predict", _predict(1), 0.25),
        Kind("oip_infer8", "/inference.GRPCInferenceService/ModelInfer", _infer(8), 0.20),
    ]


@dataclass
class Record:
    """Latencies and failures, by kind and by eighth of the soak."""

    started: float = field(default_factory=time.perf_counter)
    seconds: float = 1.0
    latencies: dict = field(default_factory=lambda: defaultdict(list))  # eighth of the soak -> [s]
    calls: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # (kind, status) -> n
    failed_by_eighth: Counter = field(default_factory=Counter)
    versions: dict = field(default_factory=lambda: defaultdict(Counter))  # eighth -> {version answering: n}
    failure_examples: list = field(default_factory=list)
    #: Per eighth, the longest a call was sent after its time (s): this generator falling behind and then
    #: sending the calls it owes at once is a burst the server sees, not the steady rate.
    send_lag: list = field(default_factory=lambda: [0.0] * 8)

    def eighth(self, t: float) -> int:
        """Which eighth of the soak the ``time.perf_counter()`` instant ``t`` falls in (0-7)."""
        return min(7, int((t - self.started) / self.seconds * 8))

    def add(self, kind: str, t0: float, error: grpc.aio.AioRpcError | None, version: int | None = None) -> None:
        self.calls[kind] += 1
        eighth = self.eighth(t0)
        if error is None:
            self.latencies[eighth].append(time.perf_counter() - t0)
            if version is not None:
                self.versions[eighth][version] += 1
        else:
            self.failed_by_eighth[eighth] += 1
            if not self.failures[(kind, error.code().name)]:  # one example of each kind of failure
                self.failure_examples.append(f"{kind}: {error.code().name} after {time.perf_counter() - t0:.1f} s: "
                                             f"{error.details()} ({error.debug_error_string()})")
            self.failures[(kind, error.code().name)] += 1


async def _one(channel: grpc.aio.Channel, kind: Kind, record: Record) -> None:
    t0 = time.perf_counter()
    version = None
    try:
        if kind.stream:
            call = channel.stream_stream(kind.method)(iter([kind.body] * STREAM_LENGTH), timeout=30)
            answers = [answer async for answer in call]
            assert len(answers) == STREAM_LENGTH
        else:
            answer = await channel.unary_unary(kind.method)(kind.body, timeout=30)
            if kind.name == "single":  # the version that answered shows the reload and rollback taking effect
                version = pb.ClassifyResponse.FromString(answer).model_spec.version
    except grpc.aio.AioRpcError as exc:
        record.add(kind.name, t0, exc)
    else:
        record.add(kind.name, t0, None, version)


@contextlib.asynccontextmanager
async def connections(address: str, clients: int):
    """``clients`` channels to ``address``: each is one HTTP/2 connection, as from one client process."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(grpc.aio.insecure_channel(address)) for _ in range(clients)]


def cpu_jiffies() -> tuple[int, int]:
    """(stolen, total) CPU time of the whole machine so far, from /proc/stat: stolen is time the hypervisor
    gave this VM's virtual CPUs to another guest."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is in user)


def picker(kinds: list[Kind], seed: int) -> Callable[[], Kind]:
    """Draws kinds of call at random, each with its share of the mix."""
    rng = np.random.default_rng(seed)
    shares = np.array([k.share for k in kinds])
    p = shares / shares.sum()
    return lambda: kinds[rng.choice(len(kinds), p=p)]


async def capacity(address: str, kinds: list[Kind], clients: int, seconds: float, callers: int = 32) -> float:
    """Calls/s of the mix, closed loop, over ``seconds``."""
    record = Record(seconds=seconds)
    pick = picker(kinds, 0)
    async with connections(address, clients) as channels:
        stop_at = time.perf_counter() + seconds

        async def caller(channel: grpc.aio.Channel) -> None:
            while time.perf_counter() < stop_at:
                await _one(channel, pick(), record)

        started = time.perf_counter()
        await asyncio.gather(*(caller(channels[i % clients]) for i in range(callers)))
        return sum(record.calls.values()) / (time.perf_counter() - started)


async def soak(address: str, kinds: list[Kind], clients: int, rate: float, seconds: float, events,
               pid: int) -> tuple[Record, dict]:
    """Send the mix at ``rate`` calls/s for ``seconds``, over ``clients`` connections in turn; ``events`` is
    [(fraction, callable)]."""
    record = Record(seconds=seconds)
    rss = {"start": resident_mib(pid)}
    rss["peak"] = rss["start"]
    stolen, total = [0] * 8, [0] * 8  # per eighth: a noisy neighbour's share of the cores is capacity lost
    pick = picker(kinds, 1)
    pending = sorted(events, key=lambda e: e[0])
    tasks: set[asyncio.Task] = set()
    async with connections(address, clients) as channels:
        started = record.started = time.perf_counter()
        sent = 0
        last_rss, jiffies = started, cpu_jiffies()
        while (now := time.perf_counter()) < started + seconds:
            while pending and now - started >= pending[0][0] * seconds:
                pending.pop(0)[1]()
            while sent < int((now - started) * rate):
                eighth = record.eighth(now)
                record.send_lag[eighth] = max(record.send_lag[eighth], now - started - sent / rate)
                task = asyncio.ensure_future(_one(channels[sent % clients], pick(), record))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if now - last_rss >= 1.0:
                rss["peak"], last_rss = max(rss["peak"], resident_mib(pid)), now
                eighth, previous, jiffies = record.eighth(now), jiffies, cpu_jiffies()
                stolen[eighth] += jiffies[0] - previous[0]
                total[eighth] += jiffies[1] - previous[1]
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    rss["end"] = resident_mib(pid)
    rss["peak"] = max(rss["peak"], rss["end"])
    return record, rss, [s / t if t else float("nan") for s, t in zip(stolen, total)]


class Scenario:
    """The model folder and config file the soak changes as it runs."""

    def __init__(self, folder: Path, version_dir: Path) -> None:
        self.base = folder / "models" / MODEL
        for version in (1, 2):
            shutil.copytree(version_dir, self.base / str(version))
        self.config = folder / "models.pbtxt"
        self.write(versions="versions: 1", batch=4096)
        self.log: list[str] = []

    def write(self, versions: str, batch: int) -> None:
        text = CONFIG.format(batch=batch, model=MODEL, base=self.base, versions=versions)
        aside = self.config.with_suffix(".tmp")
        aside.write_text(text)
        aside.replace(self.config)  # never a half-written config

    def events(self) -> list:
        def reload() -> None:
            self.log.append("hot reload: version 2 served")
            self.write(versions="versions: 1 versions: 2", batch=4096)

        def rollback() -> None:
            self.log.append("rollback: version 2 unloaded")
            self.write(versions="versions: 1", batch=4096)

        def config_change() -> None:
            self.log.append("config change: max_batch_size 4096 -> 512")
            self.write(versions="versions: 1", batch=512)

        return [(0.25, reload), (0.5, rollback), (0.75, config_change)]


def run(version_dir: Path, folder: Path, seconds: float, load: float, serve_args: list[str],
        events: bool = True, rate: float | None = None, clients: int = 1, capacity_seconds: float = 15.0,
        settle_seconds: float = 11.0) -> dict:
    """Start a server on a config of ``version_dir``, measure its capacity over ``capacity_seconds`` (15 s: a
    3 s measure varied by ±15% from run to run, and 80% of a high one overloaded the server), soak it at
    ``load`` of it (or at a fixed ``rate`` of calls/s, to compare two builds at the same traffic), and read its
    RSS again ``settle_seconds`` after the last answer (the default 11 s: once the server's heap trim has run);
    returns the figures."""
    scenario = Scenario(folder, version_dir)
    (folder / "empty").mkdir()
    server, address, pid = start_server(folder / "empty", folder, ["--model-config", str(scenario.config),
                                                                   "--poll-interval-s", "0.5", *serve_args])
    try:
        kinds = mix()
        # The Predict bodies import TensorFlow here too (tensorflow_serving's protos are TensorFlow's): ~290,000
        # objects that every full collection of this generator walked, 200-220 ms with its loop stopped, after
        # which it sent the calls it owed at once. Frozen, as the server freezes its own, for the run only (the
        # tests call this in pytest's process).
        gc.collect()
        gc.freeze()
        cap = asyncio.run(capacity(address, kinds, clients, capacity_seconds))
        rate = rate or cap * load
        cpu = (cpu_seconds(pid), time.process_time())
        events_at = scenario.events() if events else []
        record, rss, steal = asyncio.run(soak(address, kinds, clients, rate, seconds, events_at, pid))
        # Where the 2 cores went: the server's and this load generator's CPU seconds per second of soak.
        cpu_share = ((cpu_seconds(pid) - cpu[0]) / seconds, (time.process_time() - cpu[1]) / seconds)
        time.sleep(settle_seconds)
        rss["settled"] = resident_mib(pid)
        # Measured again after: on a shared VM the capacity drifts, and the soak's rate may have outgrown it.
        cap_after = asyncio.run(capacity(address, kinds, clients, capacity_seconds))
    finally:
        gc.unfreeze()
        server.terminate()
        exit_code = server.wait(60)
    p99 = [float(np.percentile(record.latencies[q], 99) * 1e3) if record.latencies[q] else float("nan")
           for q in range(8)]
    return {"capacity": cap, "capacity_after": cap_after, "rate": rate, "seconds": seconds, "clients": clients,
            "calls": dict(record.calls),
            "failures": {f"{k}/{s}": n for (k, s), n in record.failures.items()},
            "failure_examples": record.failure_examples, "p99_ms_by_eighth": p99,
            "failed_by_eighth": [record.failed_by_eighth[q] for q in range(8)], "steal_by_eighth": steal,
            "send_lag_ms_by_eighth": [lag * 1e3 for lag in record.send_lag],
            "versions_by_eighth": [dict(record.versions[q]) for q in range(8)],
            "rss_mib": rss,
            "events": scenario.log, "exit_code": exit_code,
            "cpu_share": cpu_share}


def table(r: dict) -> str:
    rss = r["rss_mib"]
    calls = sum(r["calls"].values())
    lines = [
        f"Soak: {r['seconds']:g} s of mixed traffic from {r['clients']} client connection(s) at {r['rate']:,.0f} "
        f"calls/s ({r['rate'] / r['capacity']:.0%} of the measured {r['capacity']:,.0f}; measured again after: "
        f"{r['capacity_after']:,.0f}); events: {'; '.join(r['events']) or 'none'}", "",
        "| calls | failures | RSS start / peak / end / settled MiB | RSS growth: end / settled | "
        "CPU cores used: server / load generator | server exit |",
        "|---|---|---|---|---|---|",
        f"| {calls:,} ({', '.join(f'{k} {v:,}' for k, v in r['calls'].items())}) | "
        f"{sum(r['failures'].values())} {r['failures'] or ''} | "
        f"{rss['start']:.0f} / {rss['peak']:.0f} / {rss['end']:.0f} / {rss['settled']:.0f} | "
        f"{rss['end'] / rss['start'] - 1:+.1%} / {rss['settled'] / rss['start'] - 1:+.1%} | "
        f"{r['cpu_share'][0]:.2f} / {r['cpu_share'][1]:.2f} | {r['exit_code']} |", "",
        "| by eighth of the soak (events after the 2nd, 4th, 6th) | " + " | ".join(str(q + 1) for q in range(8)) + " |",
        "|---" * 9 + "|",
        "| p99 ms | " + " | ".join(f"{p:.0f}" for p in r["p99_ms_by_eighth"]) + " |",
        "| failed calls | " + " | ".join(f"{n:,}" for n in r["failed_by_eighth"]) + " |",
        "| CPU stolen by the hypervisor | " + " | ".join(f"{s:.1%}" for s in r["steal_by_eighth"]) + " |",
        "| longest send lag of the load generator, ms | " + " | ".join(
            f"{lag:.0f}" for lag in r["send_lag_ms_by_eighth"]) + " |",
        "| versions answering single images | " + " | ".join(
            ", ".join(f"v{v}: {n:,}" for v, n in sorted(versions.items())) for versions in r["versions_by_eighth"])
        + " |",
    ]
    lines += [f"  {e}" for e in r["failure_examples"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="a repository holding fashion_mnist (else one is trained)")
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the soak [default: %(default)s]")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of capacity sent [default: %(default)s]")
    parser.add_argument("--rate", type=float, help="calls/s sent, instead of --load (to compare two builds at the "
                        "same traffic)")
    parser.add_argument("--clients", type=int, default=1,
                        help="client connections (channels) the traffic comes over [default: %(default)s]")
    parser.add_argument("--no-events", action="store_true", help="no reload, rollback or config change (a baseline)")
    parser.add_argument("serve_args", nargs="*", help="extra `tfclassify serve` arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tfclassify-soak-") as tmp:
        repo = args.model_repo or train_model(Path(tmp) / "trained")
        version_dir = max((p for p in (repo / MODEL).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        result = run(version_dir, Path(tmp) / "soak", args.seconds, args.load, args.serve_args,
                     events=not args.no_events, rate=args.rate, clients=args.clients)
    print(table(result))
    return 0 if not result["failures"] and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
