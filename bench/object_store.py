"""``python -m bench.object_store`` (``make bench-object-store``): scoring from object storage, one table.

Trains the benchmark model (1 epoch) unless --model-repo holds ``fashion_mnist``, starts one server and
``rclone serve s3`` on loopback (``tests/s3server.py``, over a local folder: files written into it are objects),
and measures on this machine, in one run:

1. the 10,000 Fashion-MNIST test images as PNG objects under a prefix and as the same files in a local folder,
   in alternating rounds (median round shown), and their ratio (goal: prefix >= 0.6 of folder);
2. the same PNGs as one zip object (ranged reads) and as the same local zip, alternated (goal: >= 0.8);
3. the scorer's peak memory over a prefix of 200,000 objects (the PNGs again under other keys, hard links)
   against a run over its first 10,000 alone with the same batch size (4,096: what the scorer picks for a prefix
   of more than 100,000 images) (goal: within 10%), and against its own resident memory after a quarter of the
   objects, once its pipeline of chunks (``in_flight`` + 2 per decoding process, 4,096 images each) is full;
4. beside each row, the CPU time of the scorer (with its decoding processes), the server and rclone over the
   row, and rclone's share of it: the S3 server shares the two cores with them.

When a goal is missed it also prints where the time goes: each row's CPU per image by process (and the rate
that CPU allows on two cores), GETs/s and a GET's latency on loopback at 1, 8 and the scorer's 64 in flight,
rclone's CPU per GET, and listing the prefix. Rates are what ``tfclassify score``
prints (the job's images over its time, Python's start-up left out); CPU is over the whole process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.__main__ import BIN, MODEL, cpu_seconds, start_server, train_model
from bench.archive import FASHION_DIR, _png, _write_folder, _write_zip
from tfclassify.client.inputs.fetch import OBJECT_REQUESTS
from tfclassify.common.datasets import load_dataset

BUCKET = "bench"
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Run:
    """One ``tfclassify score`` run: its rate, wall time, CPU seconds by process and the scorer's memory."""

    images: int
    rate: float  # images over the job's time, listing and checking the inputs included
    listing: float  # seconds listing and checking the inputs (before the first image)
    wall: float
    cpu: dict[str, float]
    peak_mib: float  # the scorer's own peak (VmHWM at exit: ru_maxrss)
    memory: dict[str, float] = field(default_factory=dict)  # sampled: at the mark and at the end

    @property
    def rclone_cores(self) -> float:
        return self.cpu["rclone"] / self.wall

    @property
    def rclone_share(self) -> float:
        return self.cpu["rclone"] / sum(self.cpu.values())


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.object_store", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, help="use this repository (must hold fashion_mnist)")
    parser.add_argument("--images", type=int, default=10_000, help="PNGs of rows 1-2 [default: %(default)s]")
    parser.add_argument("--big", type=int, default=200_000, help="objects of row 3's prefix [default: %(default)s]")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds of rows 1-2 [default: %(default)s]")
    parser.add_argument("--dir-cache-time", default="1h", help="rclone's --dir-cache-time (the objects are all "
                        "written before it starts; 0s makes it list a folder again for every GET) "
                        "[default: %(default)s]")
    parser.add_argument("--batch-size", type=int, default=4096, help="row 3's batch size, both runs "
                        "[default: %(default)s]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="tfclassify-bench-object-store-") as name:
        tmp = Path(name)
        repo = args.model_repo or train_model(tmp / "models")
        folder, zip_path = _write_inputs(tmp, args.images, args.big)
        s3 = _s3_server(tmp, args.dir_cache_time)
        server = None
        try:
            server, address, server_pid = start_server(repo, tmp, [])
            pids = {"server": server_pid, "rclone": s3.process.pid}
            score = lambda images, env=None, mark=0, *extra: _score(address, tmp, pids, images, env, mark, extra)  # noqa: E731
            env = s3.env()
            r: dict = {"args": args, "start-up": score(str(tmp / "one"))}
            r["prefix"], r["folder"], r["prefix_ratios"] = _alternate(
                args.rounds, lambda: score(f"s3://{BUCKET}/photos/", env), lambda: score(str(folder)))
            r["zip_object"], r["zip"], r["zip_ratios"] = _alternate(
                args.rounds, lambda: score(f"s3://{BUCKET}/exports/{zip_path.name}", env), lambda: score(str(zip_path)))
            batch = ("--batch-size", str(args.batch_size))
            r["first"] = score(f"s3://{BUCKET}/big/r000/", env, args.images, *batch)  # the big prefix's first keys
            r["big"] = score(f"s3://{BUCKET}/big/", env, max(args.images, args.big // 4), *batch)
            print(_table(r))
            if args.json:
                args.json.write_text(json.dumps({k: asdict(v) if isinstance(v, Run) else v for k, v in r.items()
                                                 if k != "args"}, indent=2) + "\n")
            if _missed(r):
                print(_where_time_goes(r, s3, pids["rclone"]))
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
            s3.stop()
    return 0


def _write_inputs(tmp: Path, n: int, big: int) -> tuple[Path, Path]:
    """The first ``n`` test images as PNGs in class folders: a local folder and zip, and in the bucket (under
    ``photos/``, the zip under ``exports/``, and ``big // n`` copies of the folder under ``big/r000/ ...``)."""
    print("bench: writing the images and objects ...", file=sys.stderr)
    data = load_dataset("fashion_mnist", "test", FASHION_DIR, download_missing=False)
    members = [(f"{data.label_names[c].replace('/', '_')}/{i:05d}.png", _png(image))
               for i, (image, c) in enumerate(zip(data.images[:n], data.labels[:n]))]
    folder = _write_folder(tmp / "photos", members)
    _write_folder(tmp / "one", members[:1])  # the scorer's start-up: a run of one image
    zip_path = _write_zip(tmp / "photos.zip", members)
    bucket = tmp / "s3" / BUCKET
    _link_tree(folder, bucket / "photos", [name for name, _ in members])
    (bucket / "exports").mkdir()
    os.link(zip_path, bucket / "exports" / zip_path.name)
    for copy in range(max(1, big // n)):  # keys sort by copy: the first n listed are one copy of the images
        _link_tree(folder, bucket / "big" / f"r{copy:03d}", [name for name, _ in members])
    return folder, zip_path


def _link_tree(source: Path, target: Path, names: list[str]) -> None:
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(source / name, target / name)


def _s3_server(tmp: Path, dir_cache_time: str):
    """``rclone serve s3`` over ``tmp/s3`` (the tests' server: imported from tests/, as bench.fuzzing does)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3server import S3Server

    return S3Server(tmp / "s3", tmp / "rclone.log", dir_cache_time=dir_cache_time)


def _alternate(rounds: int, remote, local) -> tuple[Run, Run, list[float]]:
    """``remote`` then ``local`` ``rounds`` times; the median round by their ratio of rates, and every ratio."""
    pairs = [(remote(), local()) for _ in range(rounds)]
    pairs.sort(key=lambda p: p[0].rate / p[1].rate)
    remote_run, local_run = pairs[len(pairs) // 2]
    return remote_run, local_run, [a.rate / b.rate for a, b in pairs]


def _score(address: str, tmp: Path, pids: dict[str, int], images: str, env: dict | None, mark: int,
           extra: tuple[str, ...] = ()) -> Run:
    """One ``tfclassify score`` run. With ``mark``, progress lines every 0.2 s tell when ``mark`` images are
    scored, and the scorer's memory (its own and with its decoding processes) is sampled until it exits."""
    progress = ["--progress-interval", "0.2"] if mark else ["--no-progress"]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "tfclassify"), "score", "--server", address, "--model", MODEL, "--images", images,
         "--output", str(tmp / "out.jsonl"), "--overwrite", *progress, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    watch = _MemoryWatch(proc, mark)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = watch.finish()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"bench: score {images} failed ({proc.returncode}): {stderr[-2000:]}")
    match = re.search(r"scored ([\d,]+) images? .*? in ([\d.]+) s \(", stdout)
    if match is None:
        raise SystemExit(f"bench: no timing in the output of score {images}: {stdout[-2000:]}")
    n, seconds = int(match[1].replace(",", "")), float(match[2])
    before_first = re.search(r"\+([\d.]+) s listing", stdout)  # the time before the first image, when printed
    listing = float(before_first[1]) if before_first else 0.0
    cpu = {"scorer": usage.ru_utime + usage.ru_stime}  # with its decoding processes (waited for)
    cpu.update({name: cpu_seconds(pid) - before[name] for name, pid in pids.items()})
    return Run(n, n / (seconds + listing), listing, wall, cpu, usage.ru_maxrss / 1024, watch.memory)


class _MemoryWatch:
    """Reads a scorer's output, and with a ``mark`` samples its memory every 0.1 s: at the first progress line of
    ``mark`` images or more, and the peaks until it exits (the scorer's VmHWM; it and its children's VmRSS)."""

    def __init__(self, proc: subprocess.Popen, mark: int) -> None:
        self.proc, self.mark, self.memory = proc, mark, {}
        self._out: list[str] = []
        self._err: list[str] = []
        self._done = threading.Event()
        self._threads = [threading.Thread(target=lambda: self._out.append(proc.stdout.read())),
                         threading.Thread(target=self._read_progress)]
        if mark:
            self._threads.append(threading.Thread(target=self._sample))
        for thread in self._threads:
            thread.start()

    def finish(self) -> tuple[str, str]:
        self._done.set()
        for thread in self._threads:
            thread.join()
        return "".join(self._out), "".join(self._err)

    def _read_progress(self) -> None:
        for line in self.proc.stderr:
            self._err.append(line)
            match = re.match(r"scored ([\d,]+)[/ ]", line)
            if self.mark and match and "at_images" not in self.memory and int(match[1].replace(",", "")) >= self.mark:
                sample = _memory_mib(self.proc.pid)
                if sample:
                    self.memory.update(at_images=int(match[1].replace(",", "")), hwm_at=sample[0], tree_at=sample[1])

    def _sample(self) -> None:
        while not self._done.wait(0.1):
            sample = _memory_mib(self.proc.pid)
            if sample:
                self.memory["hwm_end"] = max(sample[0], self.memory.get("hwm_end", 0.0))
                self.memory["tree_peak"] = max(sample[1], self.memory.get("tree_peak", 0.0))


def _memory_mib(pid: int) -> tuple[float, float] | None:
    """Process ``pid``'s VmHWM, and the VmRSS of it and its children (the decoding processes), in MiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None  # exited
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmHWM" not in fields:
        return None  # a zombie: exited, not yet waited for
    hwm = int(fields["VmHWM"].split()[0]) / 1024
    tree = sum(_rss_pages(p) for p in [pid, *_children(pid)]) * PAGE / 2**20
    return hwm, tree


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _rss_pages(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError):
        return 0


def _missed(r: dict) -> bool:
    return (r["prefix"].rate / r["folder"].rate < 0.6 or r["zip_object"].rate / r["zip"].rate < 0.8
            or not _growth(r)[0] <= 10)


def _growth(r: dict) -> tuple[float, float]:
    """The big prefix's peak RSS over the first keys' run alone, and over its own RSS once it had scored as many
    (percent; NaN when the run ended before its first progress line)."""
    big, first = r["big"], r["first"]
    at = big.memory.get("hwm_at", float("nan"))
    return 100 * (big.peak_mib / first.peak_mib - 1), 100 * (big.peak_mib / at - 1)


def _table(r: dict) -> str:
    n, big = r["args"].images, r["big"]
    prefix_ratio, zip_ratio = r["prefix"].rate / r["folder"].rate, r["zip_object"].rate / r["zip"].rate
    rounds = lambda ratios: ", ".join(f"{x:.2f}" for x in ratios)  # noqa: E731
    m, alone = big.memory, r["first"]
    vs_alone, vs_mark = _growth(r)
    rows = [
        (f"1. prefix, {n:,} PNG objects", r["prefix"], f"ratio to folder {prefix_ratio:.2f} (goal >= 0.6: "
         f"{_met(prefix_ratio >= 0.6)}; rounds {rounds(r['prefix_ratios'])})"),
        (f"1. local folder, {n:,} PNGs", r["folder"], ""),
        ("2. zip object (ranged reads)", r["zip_object"], f"ratio to local zip {zip_ratio:.2f} (goal >= 0.8: "
         f"{_met(zip_ratio >= 0.8)}; rounds {rounds(r['zip_ratios'])})"),
        ("2. local zip", r["zip"], ""),
        (f"3. prefix, first {alone.images:,} alone", alone, f"scorer peak RSS {alone.peak_mib:.0f} MiB"),
        (f"3. prefix, {big.images:,} objects", big,
         f"scorer peak RSS {big.peak_mib:.0f} MiB: {vs_alone:+.1f}% on the first {alone.images:,} alone (goal <= "
         f"+10%: {_met(vs_alone <= 10)}), {vs_mark:+.1f}% on its own {m.get('hwm_at', 0):.0f} MiB after "
         f"{m.get('at_images', 0):,} images; with its decoding processes {m.get('tree_at', 0):.0f} -> "
         f"{m.get('tree_peak', 0):.0f} MiB"),
    ]
    header = (f"{'measure':<32}{'images/s':>10}{'list s':>8}{'wall s':>8}  {'CPU s scorer/server/rclone':<28}"
              f"{'rclone':<18}notes")
    lines = [header]
    for name, run, notes in rows:
        cpu = "/".join(f"{run.cpu[k]:.1f}" for k in ("scorer", "server", "rclone"))
        rclone = f"{run.rclone_cores:.2f} cores, {100 * run.rclone_share:.0f}%"
        lines.append(f"{name:<32}{run.rate:>10,.0f}{run.listing:>8.2f}{run.wall:>8.1f}  {cpu:<28}{rclone:<18}{notes}")
    lines.append("images/s: images over the job's time, listing and checking the inputs (list s) included, the "
                 "scorer's start-up not; wall s: the whole process. rclone: its CPU seconds over the wall time, and its "
                 "share of the CPU time of scorer + server + rclone")
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _where_time_goes(r: dict, s3, rclone_pid: int) -> str:
    """CPU per image of each row's median round, and loopback GETs and LISTs from this process against the same
    rclone (nothing else running): one at a time, and as many in flight as the scorer keeps."""
    n = r["args"].images
    probe = asyncio.run(_probe(s3, rclone_pid))
    startup = r["start-up"].cpu["scorer"]
    lines = ["where the time goes:", f"  CPU per image, ms (scorer with its decoding processes, less its start-up "
             f"of {startup:.2f} CPU-s + server + rclone), and the rate that much CPU allows on 2 cores:"]
    for key, name in (("folder", "local folder"), ("prefix", "prefix"), ("zip", "local zip"),
                      ("zip_object", "zip object"), ("big", f"{r['big'].images:,}-object prefix")):
        cpu = {**r[key].cpu, "scorer": max(0.0, r[key].cpu["scorer"] - startup)}
        per = {k: v / r[key].images * 1e3 for k, v in cpu.items()}
        lines.append(f"    {name:<26}{sum(per.values()):6.3f} = {per['scorer']:.3f} + {per['server']:.3f} + "
                     f"{per['rclone']:.3f}   <= {2e3 / sum(per.values()):,.0f} images/s")
    lines.append(f"  GETs of the {n:,} small objects from this process alone (median of 3 passes):")
    for in_flight, got in probe["gets"].items():
        lines.append(f"    {in_flight:>3} in flight: {got['rate']:6,.0f} GETs/s, {got['ms']:.2f} ms each, rclone "
                     f"{got['rclone_ms']:.3f} and this process {got['client_ms']:.3f} CPU-ms per GET (rclone "
                     f"{got['rclone_cores']:.2f} cores)"
                     + (" <- the scorer's OBJECT_REQUESTS" if in_flight == OBJECT_REQUESTS else ""))
    lines.append(f"  LIST of the {n:,}-object prefix: {probe['list_s']:.2f} s, rclone {probe['list_rclone_s']:.2f} "
                 "CPU-s")
    big, first, at = r["big"], r["first"], r["big"].memory.get("hwm_at", float("nan"))
    lines.append(f"  memory: the {big.images:,}-object run held {at:.0f} MiB after its first "
                 f"{big.memory.get('at_images', 0):,} images ({big.listing:.1f} s listing and checking before the "
                 f"first), against {first.peak_mib:.0f} MiB at most for the first {first.images:,} alone, and "
                 f"{big.peak_mib:.0f} MiB at its end")
    return "\n".join(lines)


async def _probe(s3, rclone_pid: int, passes: int = 3) -> dict:
    import obstore
    from obstore.store import S3Store
    from s3server import ACCESS_KEY, SECRET_KEY

    store = S3Store(BUCKET, endpoint=s3.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                    region="us-east-1", client_options={"allow_http": True})
    t0, c0 = time.perf_counter(), cpu_seconds(rclone_pid)
    keys = [meta["path"] for batch in obstore.list(store, "photos/") for meta in batch]
    out: dict = {"list_s": time.perf_counter() - t0, "list_rclone_s": cpu_seconds(rclone_pid) - c0, "gets": {}}

    async def get(key: str, slots: asyncio.Semaphore) -> float:
        async with slots:
            start = time.perf_counter()
            await (await obstore.get_async(store, key)).bytes_async()
            return time.perf_counter() - start

    for in_flight in (1, 8, OBJECT_REQUESTS):
        sample = keys[: 500 * in_flight]  # about the same time at each level
        rounds = []
        for _ in range(passes):
            slots = asyncio.Semaphore(in_flight)
            t0, c0, p0 = time.perf_counter(), cpu_seconds(rclone_pid), time.process_time()
            latencies = sorted(await asyncio.gather(*(get(key, slots) for key in sample)))
            seconds, rclone = time.perf_counter() - t0, cpu_seconds(rclone_pid) - c0
            rounds.append({"rate": len(sample) / seconds, "ms": latencies[len(latencies) // 2] * 1e3,
                           "rclone_ms": rclone / len(sample) * 1e3, "rclone_cores": rclone / seconds,
                           "client_ms": (time.process_time() - p0) / len(sample) * 1e3})
        out["gets"][in_flight] = sorted(rounds, key=lambda x: x["rate"])[passes // 2]
    return out


if __name__ == "__main__":
    sys.exit(main())
