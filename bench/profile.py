"""Profile ferry's checkpoint and restore of a filled redis with py-spy.

    python -m bench.profile [--size-mib 1024] [--rate 250]

It runs ferry alone (its own temp root), fills redis, then records
`ferry container checkpoint --file X.tar.zst --print-stats` and, after `rm`,
`ferry container restore --file X --name N --print-stats` (and `ferry ps` with
20 containers when --ps is given) under `py-spy record --idle --threads
--format raw`. Time spent waiting on runc, CRIU or compressor threads
therefore shows up in the Python frame that waits. It writes
bench/results/profile-<date>.json with ferry's phases and the heaviest ferry
functions (inclusive) and leaf frames (self), and the flame-graph input files
next to it (bench/results/profile-<date>-*.txt, collapsed stacks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from bench import proc, workloads as wl
from bench.engines import Ferry
from bench.proc import BenchError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.access(path, os.X_OK):
        path = shutil.which("py-spy") or ""
    if not path:
        raise BenchError("py-spy is missing: .venv/bin/pip install py-spy")
    return path


def short(file: str) -> str:
    """ferry/engine/checkpoints.py rather than the full path."""
    marker = "/src/ferry/"
    if marker in file:
        return "ferry/" + file.split(marker, 1)[1]
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1].lstrip("/").split("/", 1)[-1] if marker == "/lib/python3" \
                else file.split(marker, 1)[1]
    return file


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: `frame;frame;... count` per line, root first."""
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def frame_key(frame: str) -> tuple[str, str]:
    match = FRAME_RE.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match.group("func"), short(match.group("file"))


def summarise(stacks: list[tuple[list[str], int]], rate: float, top: int = 15,
              duration: float | None = None) -> dict:
    """Inclusive seconds per ferry function and self seconds per leaf frame,
    over the thread that ran ferry's CLI (the one whose stacks hold cli/main).

    Seconds are samples over the rate. py-spy takes fewer samples than asked
    while both cores are busy (CRIU, zstd workers), so they undercount busy
    stretches: ferry's --print-stats phases are the authority on seconds, the
    profile on where inside a phase the time goes. `duration` (ferry's own)
    is recorded beside them to show the shortfall."""
    threads: dict[str, list] = {}
    for frames, count in stacks:
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else ""
        threads.setdefault(thread, []).append((frames, count))
    main_thread = max(threads, key=lambda t: sum(c for f, c in threads[t]
                                                if any("ferry/cli/main.py" in x for x in f)), default="")
    main = threads.get(main_thread, [])
    total = sum(c for _, c in main)
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    for frames, count in main:
        seen = set()
        for frame in frames:
            func, file = frame_key(frame)
            if not file.startswith("ferry/"):
                continue
            key = f"{func} ({file})"
            if key not in seen:
                seen.add(key)
                inclusive[key] = inclusive.get(key, 0) + count
        func, file = frame_key(frames[-1])
        key = f"{func} ({file})"
        leaf[key] = leaf.get(key, 0) + count

    def rows(counts: dict[str, int]) -> list[dict]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [{"frame": k, "seconds": v / rate, "share": v / total if total else 0.0} for k, v in ordered]
    others = {t: sum(c for _, c in s) / rate for t, s in threads.items() if t != main_thread}
    return {"samples": total, "sampled_seconds": total / rate, "top": rows(inclusive), "self_top": rows(leaf),
            "other_threads_seconds": others}


def record(argv: list[str], out: str, rate: int, timeout: float) -> tuple[proc.Result, float]:
    started = time.monotonic()
    done = proc.run([py_spy(), "record", "--idle", "--threads", "--format", "raw", "--rate", str(rate),
                     "--nonblocking", "-o", out, "--", *argv], desc="py-spy record", timeout=timeout)
    return done, time.monotonic() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--ps", action="store_true", help="also profile ferry ps with 20 containers")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.profile: error: needs root", file=sys.stderr)
        return 2
    now = dt.datetime.now()
    stem = os.path.join(RESULTS, f"profile-{now.strftime('%Y-%m-%d')}")
    base = tempfile.mkdtemp(prefix="ferry-profile-", dir="/var/tmp")
    ferry = Ferry(os.path.join(base, "root"))
    w = wl.redis(args.size_mib)
    name = "profile-redis"
    archive = os.path.join(base, "redis.tar.zst")
    doc = {"kind": "profile", "date": now.isoformat(timespec="seconds"), "rate": args.rate,
           "description": f"redis filled to {args.size_mib} MiB, archive .tar.zst, ferry alone "
                          f"(root {os.path.basename(base)}).", "runs": []}
    status = 0
    try:
        ferry.build_debian(w.image, ["redis-server"], wl.REDIS_CMD)
        ferry.run(name, w.image, list(w.command))
        ip = ferry.ip(name)
        wl.wait_ready(w, ip)
        info = wl.fill(w, ip)
        doc["fill"] = info
        print(f"filled {info['keys']} keys, used_memory {info['used_memory'] >> 20} MiB", file=sys.stderr)
        steps = [("checkpoint", "ferry container checkpoint --file X.tar.zst",
                  ferry.argv("container", "checkpoint", name, "--file", archive, "--print-stats")),
                 ("restore", "ferry container restore --file X.tar.zst --name N",
                  ferry.argv("container", "restore", "--file", archive, "--name", name, "--print-stats"))]
        for key, title, command in steps:
            if key == "restore":
                ferry.rm(name)
            out = f"{stem}-{key}.txt"
            os.sync()   # no writeback of the fill or the previous step inside the measurement
            done, wall = record(command, out, args.rate, timeout=w.timeout() + 60)
            stats = json.JSONDecoder().raw_decode(done.stdout[done.stdout.find("{"):])[0] \
                if "{" in done.stdout else {}
            duration = stats.get(f"ferry_{key}_duration")
            with open(out) as f:
                summary = summarise(parse_collapsed(f.read()), args.rate,
                                    duration=duration / 1e6 if duration else None)
            entry = (stats.get("container_statistics") or [{}])[0]
            run = {"title": title, "wall": wall, "ferry_duration": duration / 1e6 if duration else None,
                   "phases": entry.get("ferry_phases", {}),
                   "criu": entry.get("criu_statistics", {}), "collapsed": os.path.relpath(out, REPO), **summary}
            if key == "checkpoint":
                run["archive_size"] = os.path.getsize(archive)
            doc["runs"].append(run)
            print(f"{title}: {wall:.2f} s, phases {run['phases']}", file=sys.stderr)
        wl.verify(w, ferry.ip(name), info)
        if args.ps:
            ferry.rm(name, force=True)
            ferry.load(wl.make_busybox_archive(base))
            for i in range(20):
                ferry.run(f"ps-{i:02d}", wl.BUSYBOX.image, ["sleep", "3600"])
            out = f"{stem}-ps.txt"
            _, wall = record(ferry.argv("ps"), out, 1000, timeout=60)
            with open(out) as f:
                summary = summarise(parse_collapsed(f.read()), 1000)
            doc["runs"].append({"title": "ferry ps (20 containers)", "wall": wall,
                                "collapsed": os.path.relpath(out, REPO), **summary})
    except (BenchError, subprocess.SubprocessError, OSError, ValueError) as exc:
        print(f"bench.profile: error: {exc}", file=sys.stderr)
        status = 1
    finally:
        for problem in ferry.close():
            print(f"bench.profile: cleanup: {problem}", file=sys.stderr)
        subprocess.run(["rm", "-rf", "--one-file-system", "--", base], timeout=300)
    if doc["runs"]:
        with open(f"{stem}.json", "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote {os.path.relpath(stem, REPO)}.json", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
