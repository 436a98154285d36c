"""Run the benchmarks: ferry against podman, alternating, in one run.

    python -m bench.run [--quick] [--workloads redis-1g,nginx] [--repeats N]
    (python -m bench.migration: the client gap of four kinds of migration)

For every workload and engine (ferry writes .tar.zst; "ferry-gzip" is ferry
writing .tar.gz; "ferry-none" is ferry writing a plain .tar with --compress
none, only where the CRIU-floor targets are measured: redis-1g, else the
largest redis in the run; podman always writes zstd), each repeat measures:
  archive round  checkpoint --export, rm, restore --import --name (wall times, size);
  local round    checkpoint and restore without an archive (the CRIU floor),
                 and CRIU's own frozen time from --print-stats;
  leave-running round  checkpoint --leave-running --export of the running
                 container: CRIU's frozen time, and ferry's whole freeze (it
                 holds the cgroup frozen until its files are archived); the
                 archive is then deleted;
  gap round      a client on one connection across checkpoint --tcp-established,
                 rm and restore --tcp-established: the longest time without a reply.
Then `ps` latency with 20 running containers in each engine; `inspect`, `logs`
and `images` against one running busybox; `run -d` until the service answers
an HTTP GET, and `rm -f` of that running container (busybox httpd, and nginx
when its image is in the run); and, for redis 2 GiB, the peak anonymous RSS
of ferry's own processes during its checkpoint to archive and restore from
archive (bench/rss.py). Raw samples and
the environment go to bench/results/<date>.json; `python -m bench.report`
renders docs/benchmarks.md and the plot from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from bench import proc, rss, workloads as wl
from bench.engines import Engine, Ferry, Podman, PodmanNamespace, die_with_parent, wait_until
from bench.proc import BenchError
from bench.stats import FERRY, FERRY_AGE, FERRY_GZIP, FERRY_NONE, PODMAN, floor_workload

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
PIPE_MAX_SIZE = 64 << 20
PS_CONTAINERS = 20
# One running busybox for inspect/logs/images; it writes this many log lines first.
COMMANDS_LINES = 100
COMMANDS_CMD = ["sh", "-c", f"for i in $(seq {COMMANDS_LINES}); do echo log line $i; done; exec sleep 3600"]
# run -d to the first answer: a fixed address per engine and workload, so that
# the poller knows where to ask without an inspect (which would be timed).
# ferry's are on its default network, far from the low addresses IPAM hands
# out first; podman's on its default CNI network (10.88.0.0/16).
START_IPS = {"busybox-httpd": {"ferry": "10.90.250.100", "podman": "10.88.250.100"},
             "nginx": {"ferry": "10.90.250.101", "podman": "10.88.250.101"}}
START_POLL_INTERVAL = 0.003
START_WAIT_TIMEOUT = 30
CLIENT_READY_TIMEOUT = 30
IN_FLIGHT_ATTEMPTS = 5
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


class Recorder:
    """A run's samples and failures, as the results file keeps them (both benchmarks)."""
    samples: list[dict]
    failures: list[dict]

    def sample(self, workload: str, engine: str, metric: str, rep: int, value, extra=None) -> None:
        self.samples.append({"workload": workload, "engine": engine, "metric": metric, "rep": rep,
                             "value": value, "ok": value is not None, "extra": extra or {}})

    def failure(self, workload: str, engine: str, step: str, rep: int, error: Exception) -> None:
        text = str(error)
        log(f"FAILED {workload} {engine} {step} (repeat {rep}): {text.splitlines()[0] if text else error!r}")
        self.failures.append({"workload": workload, "engine": engine, "step": step, "rep": rep,
                              "error": text[-2000:]})


class Run(Recorder):
    """One benchmark run: its engines, its samples, and everything to clean up."""

    def __init__(self, args, base: str):
        self.args = args
        self.base = base
        self.samples: list[dict] = []
        self.failures: list[dict] = []
        self.notes: list[str] = []
        self.workload_info: dict = {}
        self.archives = os.path.join(base, "archives")
        os.makedirs(self.archives, mode=0o700)
        self.namespace = PodmanNamespace(os.path.join(base, "podman"))
        self.ferry = Ferry(os.path.join(base, "ferry-root"))
        self.podman: Podman | None = None
        self.rss_workloads: set[str] = set() if args.skip_rss else set(filter(None, args.rss_workloads.split(",")))
        self.none_workload: str | None = None   # where the ferry-none round runs (execute sets it)
        self.age_identity_file = os.path.join(base, "age-identity")
        self._age_recipient = ""

    def age_recipient(self) -> str:
        """The ferry-age round's recipient; its identity file, 0600, is in the run's temp dir."""
        if not os.path.exists(self.age_identity_file):
            from pyrage import x25519
            identity = x25519.Identity.generate()
            fd = os.open(self.age_identity_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{identity}\n")
            self._age_recipient = str(identity.to_public())
        return self._age_recipient

    # ---- containers --------------------------------------------------------------
    def start(self, engine: Engine, w: wl.Workload, name: str) -> dict:
        if engine.exists(name):
            engine.rm(name, force=True)
        # ferry's address leases are machine-wide; between `rm` and `restore`
        # another root (a test run) could take the lowest free address, so
        # ferry's benchmark containers ask for addresses from the top of the subnet.
        ip = wl.FERRY_IPS.get(w.name) if engine is self.ferry else None
        engine.run(name, w.image, list(w.command), ip=ip)
        ip = engine.ip(name)
        wl.wait_ready(w, ip)
        info = wl.fill(w, ip)
        info["ip"] = ip
        if info.get("used_memory"):
            log(f"  {engine.name} {name}: {info['keys']} keys, used_memory {info['used_memory'] >> 20} MiB "
                f"in {info['fill_seconds']:.1f} s")
        return info

    # ---- rounds ------------------------------------------------------------------
    def archive_round(self, label: str, engine: Engine, w: wl.Workload, name: str, info: dict, rep: int) -> None:
        ext = {FERRY_GZIP: ".tar.gz", PODMAN: ".tar.gz", FERRY_NONE: ".tar"}.get(label, ".tar.zst")
        compress = "none" if label == FERRY_NONE else None
        sealed = ("--encrypt-to", self.age_recipient()) if label == FERRY_AGE else ()
        opened = ("--decrypt-key", self.age_identity_file) if label == FERRY_AGE else ()
        path = os.path.join(self.archives, f"{w.name}-{label}-{rep}{ext}")
        # ferry's own memory, sampled during its zstd archive round of the RSS workloads.
        sampler = rss.Sampler(self.ferry.root) if label == FERRY and w.name in self.rss_workloads else None
        watch = sampler.watch if sampler else None
        peaks = {}
        try:
            settle()
            ck = engine.checkpoint(name, export=path, compress=compress, timeout=w.timeout(), watch=watch,
                                   extra=sealed)
            if sampler:
                peaks["checkpoint"] = sampler.peak
            size = os.path.getsize(path)
            engine.rm(name)
            settle()
            rs = engine.restore(name=name, archive=path, timeout=w.timeout(), watch=watch, extra=opened)
            if sampler:
                peaks["restore"] = sampler.peak
            info["ip"] = engine.ip(name)
            wl.verify(w, info["ip"], info)
        finally:
            if os.path.exists(path):
                os.unlink(path)
        sampled = {"rss_sampled": True} if sampler else {}
        self.sample(w.name, label, "checkpoint_archive", rep, ck.seconds, {**_details(ck.stats), **sampled})
        self.sample(w.name, label, "archive_size", rep, size)
        self.sample(w.name, label, "restore_archive", rep, rs.seconds, {**_details(rs.stats), **sampled})
        log(f"  {label:10} archive: checkpoint {ck.seconds:6.2f} s, {size / 2**20:7.1f} MiB, "
            f"restore {rs.seconds:6.2f} s")
        for step, peak in peaks.items():
            self.sample(w.name, FERRY, f"rss_anon_sum_{step}", rep, peak.sum_mib, peak.as_dict())
            log(f"  {label:10} {step}: ferry's peak RssAnon (sum) {peak.sum_mib:6.1f} MiB, largest process "
                f"{peak.max_process_mib:6.1f} MiB ({peak.ticks} samples)")

    def local_round(self, engine: Engine, w: wl.Workload, name: str, info: dict, rep: int) -> None:
        settle()
        ck = engine.checkpoint(name, timeout=w.timeout())
        settle()
        rs = engine.restore(name=name, timeout=w.timeout())
        wl.verify(w, info["ip"], info)
        details = _details(ck.stats)
        self.sample(w.name, engine.name, "checkpoint_local", rep, ck.seconds, details)
        self.sample(w.name, engine.name, "restore_local", rep, rs.seconds, _details(rs.stats))
        frozen = details.get("criu", {}).get("frozen_time")
        self.sample(w.name, engine.name, "criu_dump", rep, None if frozen is None else frozen / 1e6, details)
        log(f"  {engine.name:10} local:   checkpoint {ck.seconds:6.2f} s (CRIU frozen "
            f"{(frozen or 0) / 1e6:.2f} s), restore {rs.seconds:6.2f} s")

    def frozen_round(self, engine: Engine, w: wl.Workload, name: str, info: dict, rep: int) -> None:
        """A local `checkpoint --leave-running`: one more sample of CRIU's frozen time
        of a local dump, without a restore. On this VM the page cache's write speed
        swings 0.35-1.5 s per GiB from one dump to the next, whichever engine dumps
        (bench/analysis.md), so the repeats' three samples alone cannot compare engines."""
        settle()
        ck = engine.checkpoint(name, leave_running=True, timeout=w.timeout())
        wl.verify(w, info["ip"], info)
        details = {**_details(ck.stats), "leave_running": True}
        frozen = details.get("criu", {}).get("frozen_time")
        if frozen is None:
            raise BenchError(f"{engine.name} checkpoint --leave-running --print-stats gave no CRIU frozen_time")
        self.sample(w.name, engine.name, "criu_dump", rep, frozen / 1e6, details)
        log(f"  {engine.name:10} local -R: CRIU frozen {frozen / 1e6:6.2f} s")

    def leave_running_round(self, engine: Engine, w: wl.Workload, name: str, info: dict, rep: int) -> None:
        """checkpoint --leave-running --export of the running container: CRIU's
        frozen time. The container never stops, so nothing is restored."""
        ext = ".tar.gz" if engine is self.podman else ".tar.zst"   # podman writes zstd whatever the name
        path = os.path.join(self.archives, f"{w.name}-{engine.name}-leave-running-{rep}{ext}")
        try:
            settle()
            ck = engine.checkpoint(name, export=path, leave_running=True, timeout=w.timeout())
            size = os.path.getsize(path)
        finally:
            if os.path.exists(path):
                os.unlink(path)
        wl.verify(w, info["ip"], info)
        details = {**_details(ck.stats), "wall": ck.seconds, "archive_size": size}
        frozen = details.get("criu", {}).get("frozen_time")
        self.sample(w.name, engine.name, "criu_dump_leave_running", rep,
                    None if frozen is None else frozen / 1e6, details)
        if frozen is None:   # a failed sample; the container is fine, so no fresh start
            self.failure(w.name, engine.name, "leave-running", rep,
                         BenchError(f"{engine.name} checkpoint --leave-running --print-stats gave no CRIU frozen_time"))
            return
        # ferry holds the container frozen past CRIU's dump, until its files are archived.
        held = details.get("phases", {}).get("frozen_for_files")
        if held is not None:
            self.sample(w.name, engine.name, "frozen_leave_running", rep, held / 1e6, {"phases": details["phases"]})
        log(f"  {engine.name:10} -R export: CRIU frozen {frozen / 1e6:6.2f} s"
            + (f", container frozen {held / 1e6:6.2f} s" if held is not None else "")
            + f" (checkpoint {ck.seconds:6.2f} s, {size / 2**20:7.1f} MiB)")

    def gap_round(self, engine: Engine, w: wl.Workload, name: str, info: dict, rep: int) -> None:
        path = os.path.join(self.archives, f"{w.name}-{engine.name}-gap-{rep}.tar.zst")
        settle()
        client = self.start_client(w, info["ip"])
        steps: dict = {}
        try:
            t0 = time.monotonic()
            steps["checkpoint"], steps["checkpoint_attempts"] = self.checkpoint_under_load(engine, w, name, path)
            steps["rm"] = engine.rm(name).seconds
            steps["restore"] = engine.restore(name=name, archive=path, tcp=True,
                                              new_name=engine.keeps_name_with_tcp, timeout=w.timeout()).seconds
            t1 = time.monotonic()
            client.stdin.write(f"restored {t1!r}\n")
            client.stdin.flush()
            result = finish_client(client, timeout=self.args.client_max_seconds)
        except BaseException:
            stop_client(client)
            raise
        finally:
            if os.path.exists(path):
                os.unlink(path)
        info["ip"] = engine.ip(name)
        wl.verify(w, info["ip"], info)
        gap = result["max_gap"] if result.get("first_reply_after_restore") is not None else None
        extra = {"downtime": t1 - t0, "steps": steps, "client": result,
                 "kept_connection": result.get("kept_connection")}
        self.sample(w.name, engine.name, "gap", rep, gap, extra)
        if gap is None:
            raise BenchError(f"the client got no reply after the restore ({result.get('ended')}, "
                             f"errors: {result.get('errors', [])[-3:]})")
        kept = "kept its connection" if result["kept_connection"] else \
            f"reconnected {result['reconnects']}x" if result["persistent"] else "new connection per request"
        log(f"  {engine.name:10} gap:     {gap:6.2f} s (ckpt+rm+restore {t1 - t0:.2f} s; client {kept})")

    def checkpoint_under_load(self, engine: Engine, w: wl.Workload, name: str, path: str) -> tuple[float, int]:
        """checkpoint --tcp-established while the client runs. CRIU refuses a
        connection that is being accepted at that moment ("In-flight
        connection"; podman has no way to skip those), and the container then
        keeps running: try again, as a user would, and count the attempts (the
        client's gap keeps running meanwhile)."""
        started = time.monotonic()
        for attempt in range(1, IN_FLIGHT_ATTEMPTS + 1):
            try:
                engine.checkpoint(name, export=path, tcp=True, timeout=w.timeout())
                return time.monotonic() - started, attempt
            except BenchError as exc:
                if "In-flight" not in str(exc) or attempt == IN_FLIGHT_ATTEMPTS:
                    raise
                log(f"  {engine.name:10} checkpoint attempt {attempt} hit an in-flight connection; retrying")
        raise AssertionError("unreachable")

    def start_client(self, w: wl.Workload, ip: str) -> subprocess.Popen:
        return start_client(w, ip, self.args.client_interval, self.args.client_max_seconds)

    # ---- a workload ----------------------------------------------------------------
    def workload(self, w: wl.Workload, repeats: int) -> None:
        engines = [self.ferry, self.podman]
        name = f"bench-{w.name}"
        infos: dict[str, dict | None] = {}
        for engine in engines:
            try:
                infos[engine.name] = self.start(engine, w, name)
            except BenchError as exc:
                infos[engine.name] = None
                self.failure(w.name, engine.name, "start", -1, exc)
        self.workload_info[w.name] = {"image": w.image, "command": list(w.command), "fill_bytes": w.fill_bytes,
                                      "containers": {e: i for e, i in infos.items()}}

        def attempt(engine: Engine, label: str, step: str, rep: int, fn) -> None:
            info = infos.get(engine.name)
            if info is None:
                return
            try:
                fn(info)
            except BenchError as exc:
                self.failure(w.name, label, step, rep, exc)
                try:   # start over: a fresh container, filled again
                    infos[engine.name] = self.start(engine, w, name)
                except BenchError as again:
                    infos[engine.name] = None
                    self.failure(w.name, engine.name, "restart", rep, again)

        for rep in range(repeats):
            forward = rep % 2 == 0
            order = engines if forward else engines[::-1]
            archive_variants = [(FERRY, self.ferry), (PODMAN, self.podman)]
            if not self.args.no_gzip:
                archive_variants.insert(1, (FERRY_GZIP, self.ferry))
            if w.name == self.none_workload:
                archive_variants.insert(1, (FERRY_NONE, self.ferry))
                archive_variants.insert(2, (FERRY_AGE, self.ferry))
            if not forward:
                archive_variants.reverse()
            log(f"{w.name}: repeat {rep + 1}/{repeats} ({' then '.join(e.name for e in order)})")
            for label, engine in archive_variants:
                attempt(engine, label, "archive", rep,
                        lambda info, label=label, engine=engine: self.archive_round(label, engine, w, name, info, rep))
            for engine in order:
                attempt(engine, engine.name, "local", rep,
                        lambda info, engine=engine: self.local_round(engine, w, name, info, rep))
            for engine in order:
                attempt(engine, engine.name, "leave-running", rep,
                        lambda info, engine=engine: self.leave_running_round(engine, w, name, info, rep))
            for engine in order:
                attempt(engine, engine.name, "gap", rep,
                        lambda info, engine=engine: self.gap_round(engine, w, name, info, rep))
        if w.kind == "redis":
            for extra in range(self.args.frozen_rounds):
                rep = repeats + extra
                for engine in (engines if extra % 2 == 0 else engines[::-1]):
                    attempt(engine, engine.name, "frozen", rep,
                            lambda info, engine=engine: self.frozen_round(engine, w, name, info, rep))
        for engine in engines:
            engine.rm(name, force=True)

    # ---- ps --------------------------------------------------------------------------
    def ps(self, rounds: int, per_round: int) -> None:
        names = [f"bench-ps-{i:02d}" for i in range(PS_CONTAINERS)]
        engines = [self.ferry, self.podman]
        log(f"ps: starting {PS_CONTAINERS} containers in each engine")
        for engine in engines:
            for name in names:
                engine.run(name, wl.BUSYBOX.image, ["sleep", "3600"])
        try:
            for engine in engines:
                running = [n for n in engine.names() if n in names]
                if len(running) != PS_CONTAINERS:
                    raise BenchError(f"{engine.name}: {len(running)} of {PS_CONTAINERS} ps containers exist")
            for r in range(rounds):
                for engine in (engines if r % 2 == 0 else engines[::-1]):
                    self.timed_samples("ps-20", "ps", engine, ("ps",), r, per_round)
            self.log_medians("ps-20", ("ps",))
        finally:
            for engine in engines:
                for name in names:
                    engine.rm(name, force=True)

    def timeit(self, engine: Engine, args: tuple[str, ...], *, repeat: int, warmup: int,
               wait_http: str | None = None) -> dict:
        """bench.timeit run inside the engine's mount namespace: {"samples": [s...], "failures": [...]}."""
        outer, inner = engine.timing_argv(*args)
        wait = ["--wait-http", wait_http, "--poll-interval", str(START_POLL_INTERVAL),
                "--wait-timeout", str(START_WAIT_TIMEOUT)] if wait_http else []
        # nsenter starts in the namespace's root directory: say where bench is,
        # and keep the snapshot of ferry (snapshot_ferry) first for ferry's imports.
        path = ":".join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
        helper = [*outer, "env", f"PYTHONPATH={path}", sys.executable, "-m", "bench.timeit",
                  "--repeat", str(repeat), "--warmup", str(warmup), *wait, "--", *inner]
        what = f"{engine.name} {args[0]}"
        done = proc.run(helper, desc=f"time {what}", timeout=60 + 60 * (repeat + warmup) + START_WAIT_TIMEOUT,
                        check=False, cwd=REPO)
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"timing {what} failed: {proc.tail(done.stderr)}") from None

    def timed_samples(self, workload: str, metric: str, engine: Engine, args: tuple[str, ...], rep: int,
                      repeat: int, warmup: int = 1) -> None:
        """Time a command `repeat` times (after `warmup` untimed runs); one sample each."""
        timing = self.timeit(engine, args, repeat=repeat, warmup=warmup)
        for value in timing["samples"]:
            self.sample(workload, engine.name, metric, rep, value)
        for failure in timing["failures"]:
            self.failure(workload, engine.name, metric, rep, BenchError(failure))

    def log_medians(self, workload: str, metrics: tuple[str, ...]) -> None:
        for metric in metrics:
            for engine in (self.ferry, self.podman):
                values = sorted(s["value"] for s in self.samples if s["ok"] and s["workload"] == workload
                                and s["metric"] == metric and s["engine"] == engine.name)
                if values:
                    log(f"  {engine.name:10} {metric}: median {values[len(values) // 2] * 1000:.0f} ms, "
                        f"min {values[0] * 1000:.0f} ms ({len(values)} samples)")

    # ---- inspect, logs, images against one running busybox --------------------------
    def commands(self, rounds: int, per_round: int) -> None:
        name = "bench-commands"
        engines = [self.ferry, self.podman]
        log(f"inspect, logs, images: one running busybox in each engine ({COMMANDS_LINES} log lines)")
        try:
            for engine in engines:
                engine.run(name, wl.BUSYBOX.image, COMMANDS_CMD)
            for engine in engines:
                def logged(engine=engine) -> bool:
                    return len(engine.cli("logs", name, desc=f"logs {name}").stdout.splitlines()) >= COMMANDS_LINES
                wait_until(logged, f"{engine.name} {name}'s {COMMANDS_LINES} log lines", 30)
            for r in range(rounds):
                for metric, args in (("inspect", ("inspect", name)), ("logs", ("logs", name)), ("images", ("images",))):
                    for engine in (engines if r % 2 == 0 else engines[::-1]):
                        self.timed_samples("commands", metric, engine, args, r, per_round)
            self.log_medians("commands", ("inspect", "logs", "images"))
        finally:
            for engine in engines:
                engine.rm(name, force=True)

    # ---- run -d until the service answers, then rm -f ----------------------------------
    def startup(self, kinds: set[str], rounds: int) -> None:
        """Per sample: `run -d` (fixed --ip) timed until a GET on IP:port answers,
        then `rm -f` of the running container, timed on its own. One untimed
        warm-up sample per engine and workload first."""
        engines = [self.ferry, self.podman]
        for w in [wl.BUSYBOX] + ([wl.NGINX] if "nginx" in kinds else []):
            name = f"bench-start-{w.kind}"
            log(f"run -d until {w.name} answers, then rm -f: {rounds} rounds")
            for engine in engines:
                engine.rm(name, force=True)
            for r in range(-1, rounds):
                for engine in (engines if r % 2 == 0 else engines[::-1]):
                    try:
                        self.start_sample(engine, w, name, r)
                    except BenchError as exc:
                        self.failure(w.name, engine.name, "run -d / rm -f", r, exc)
                        engine.rm(name, force=True)
            self.log_medians(w.name, ("run_to_answer", "rm_running"))
            for ip in START_IPS[w.name].values():
                proc.run(["ip", "neigh", "flush", "to", ip], desc="ip neigh flush", timeout=10, check=False)

    def start_sample(self, engine: Engine, w: wl.Workload, name: str, rep: int) -> None:
        ip = START_IPS[w.name][engine.name]
        # A new container behind an address the host has a neighbour entry for
        # (the previous sample's MAC) would wait for that entry to go stale:
        # forget it, as for a fresh address (not timed).
        proc.run(["ip", "neigh", "flush", "to", ip], desc="ip neigh flush", timeout=10, check=False)
        args = ("run", "-d", "--name", name, "--ip", ip, *engine.run_flags(), w.image, *w.command)
        try:
            started = self.timeit(engine, args, repeat=1, warmup=0, wait_http=f"{ip}:{w.port}")
            if started["failures"] or not started["samples"]:
                raise BenchError(f"{engine.name} run -d {name}: {'; '.join(started['failures']) or 'no sample'}")
            removed = self.timeit(engine, ("rm", *engine.force_flags(True), name), repeat=1, warmup=0)
            if removed["failures"] or not removed["samples"]:
                raise BenchError(f"{engine.name} rm -f {name}: {'; '.join(removed['failures']) or 'no sample'}")
        except BenchError:
            engine.rm(name, force=True)
            raise
        if rep < 0:
            return   # the warm-up
        self.sample(w.name, engine.name, "run_to_answer", rep, started["samples"][0],
                    {**started["details"][0], "ip": ip})
        self.sample(w.name, engine.name, "rm_running", rep, removed["samples"][0],
                    {"argv": ["rm", *engine.force_flags(True), name]})

    # ---- the whole run -------------------------------------------------------------------
    def execute(self, selected: list[wl.Workload]) -> None:
        if not self.args.no_none:
            self.none_workload = floor_workload([w.name for w in selected])
        self.namespace.start()
        self.podman = Podman(os.path.join(self.base, "podman"), self.namespace)
        self.env = environment(self)
        wants_busybox = not (self.args.skip_ps and self.args.skip_commands and self.args.skip_start)
        kinds = {w.kind for w in selected} | ({"busybox"} if wants_busybox else set())
        log(f"preparing images ({', '.join(sorted(kinds))}) in both engines")
        self.layers = wl.prepare_images(kinds, self.ferry, [self.ferry, self.podman], self.base, log)
        if not self.args.skip_ps:
            try:
                self.ps(self.args.ps_rounds, self.args.ps_per_round)
            except BenchError as exc:
                self.failure("ps-20", "both", "ps", -1, exc)
        if not self.args.skip_commands:
            try:
                self.commands(self.args.commands_rounds, self.args.commands_per_round)
            except BenchError as exc:
                self.failure("commands", "both", "commands", -1, exc)
        if not self.args.skip_start:
            try:
                self.startup(kinds, self.args.start_rounds)
            except BenchError as exc:
                self.failure("busybox-httpd", "both", "run -d / rm -f", -1, exc)
        for w in selected:
            repeats = self.args.repeats or (3 if self.args.quick or w.fill_bytes >= wl.GIB else 5)
            try:
                self.workload(w, repeats)
            except BenchError as exc:
                self.failure(w.name, "both", "workload", -1, exc)

    def cleanup(self) -> list[str]:
        problems = []
        for engine in (self.ferry, self.podman):
            if engine is None:
                continue
            started = time.monotonic()
            try:
                problems += engine.close()
            except BenchError as exc:
                problems.append(str(exc))
            log(f"  {engine.name}: removed everything in {time.monotonic() - started:.1f} s")
        self.namespace.stop()
        return problems


def start_client(w: wl.Workload, ip: str, interval: float, max_seconds: float) -> subprocess.Popen:
    """The gap client (bench.client) on one connection to ip, once it has had replies."""
    argv = [sys.executable, "-m", "bench.client", "--proto", w.proto, "--host", ip, "--port", str(w.port),
            "--interval", str(interval), "--max-seconds", str(max_seconds)]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO, env=proc.env(), preexec_fn=die_with_parent)
    ready, _, _ = select.select([client.stdout], [], [], CLIENT_READY_TIMEOUT)
    line = client.stdout.readline() if ready else ""
    if line.strip() != "ready":
        stop_client(client)
        raise BenchError(f"the gap client did not get replies from {ip}:{w.port}: "
                         f"{line.strip() or 'no answer'}")
    return client


def finish_client(client: subprocess.Popen, timeout: float) -> dict:
    """The client's JSON result, once it has stopped by itself."""
    try:
        out, err = client.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        stop_client(client)
        raise BenchError("the gap client did not finish") from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if client.returncode != 0 or not lines:
        raise BenchError(f"the gap client failed (exit {client.returncode}): {proc.tail(err)}")
    return json.loads(lines[-1])


def stop_client(client: subprocess.Popen) -> None:
    if client.poll() is None:
        client.kill()
    client.wait(timeout=10)


def settle() -> None:
    """Flush dirty pages before a timed step, so that the writeback of the
    previous step's GiBs of CRIU images does not land on the next one."""
    os.sync()


def _details(stats: dict) -> dict:
    """The parts of --print-stats worth keeping per sample."""
    entry = (stats.get("container_statistics") or [{}])[0]
    out = {"criu": entry.get("criu_statistics") or {}}
    if "ferry_phases" in entry:
        out["phases"] = entry["ferry_phases"]
    for key in ("runtime_checkpoint_duration", "runtime_restore_duration"):
        if key in entry:
            out[key] = entry[key]
    for key in ("podman_checkpoint_duration", "podman_restore_duration",
                "ferry_checkpoint_duration", "ferry_restore_duration"):
        if key in stats:
            out[key] = stats[key]
    return out


# ---- host state: checks, environment, what podman's CNI leaves behind ------------

def snapshot_ferry(base: str) -> dict:
    """Copy src/ferry into the run's temp dir and put it first on PYTHONPATH
    (this process and every child: the ferry CLI, its monitors and exit
    commands), so that commits landing in the working tree during a long run
    do not change the code under test halfway. Returns what was copied."""
    target = os.path.join(base, "ferry-src")
    os.makedirs(target)
    shutil.copytree(os.path.join(REPO, "src", "ferry"), os.path.join(target, "ferry"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc.run([sys.executable, "-m", "compileall", "-q", target], desc="byte-compile ferry", timeout=120)
    os.environ["PYTHONPATH"] = target
    sys.path.insert(0, target)
    git = lambda *a: _version(["git", "-C", REPO, *a])   # noqa: E731
    diff = proc.run(["git", "-C", REPO, "diff", "HEAD", "--", "src"], desc="git diff", timeout=30, check=False).stdout
    return {"path": target, "commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "uncommitted_src_diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
            "uncommitted_src_files": [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()
                                      if line.strip()] if diff else []}


def _version(argv: list[str]) -> str:
    try:
        done = proc.run(argv, desc=" ".join(argv), timeout=30, check=False)
    except BenchError as exc:
        return f"unavailable ({exc})"
    text = (done.stdout or done.stderr).rstrip()
    if "--porcelain" in argv:
        return text   # "XY path" lines: the leading status column matters
    text = text.strip()
    return text.splitlines()[0] if text else ""


def preflight() -> list[str]:
    notes = []
    if os.geteuid() != 0:
        raise BenchError("the benchmarks need root (runc, CRIU, namespaces)")
    for tool in ("podman", "runc", "criu", "conmon", "unshare", "nsenter", "iptables-save"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in proc.TOOL_PATH.split(":")):
            raise BenchError(f"{tool} is not installed (make bench installs podman; run make setup first)")
    criu = proc.run(["criu", "--version"], desc="criu --version", timeout=30).stdout
    version = next((line.split(":", 1)[1].strip() for line in criu.splitlines() if line.startswith("Version")), "")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < (4, 2):
        raise BenchError(f"CRIU on PATH ({proc.TOOL_PATH}) is {version or 'unknown'}; runc needs CRIU >= 4.2 "
                         "first in PATH (/usr/local/sbin/criu, from make setup)")
    with open("/proc/sys/fs/pipe-max-size") as f:
        current = int(f.read())
    if current < PIPE_MAX_SIZE:
        # ferry raises it before every dump; do it once up front so podman's
        # dumps get the same limit whichever engine runs first.
        with open("/proc/sys/fs/pipe-max-size", "w") as f:
            f.write(str(PIPE_MAX_SIZE))
        notes.append(f"raised fs.pipe-max-size from {current} to {PIPE_MAX_SIZE} (as ferry does before a dump)")
    return notes


def environment(run: Run) -> dict:
    import importlib.metadata
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = lambda *a: _version(["git", "-C", REPO, *a])   # noqa: E731
    check = proc.run(run.ferry.argv("system", "check", "--format", "json"), desc="ferry system check",
                     timeout=120, check=False)
    try:
        ready = json.loads(check.stdout).get("ready")
    except ValueError:
        ready = None
    return {
        "kernel": platform.release(), "machine": platform.machine(), "cpus": os.cpu_count(), "cpu": cpu,
        "mem_kib": int(mem), "python": platform.python_version(),
        "criu": _version(["criu", "--version"]).replace("Version: ", ""),
        "criu_path": _version(["sh", "-c", "command -v criu"]),
        "runc": _version(["runc", "--version"]), "conmon": _version(["conmon", "--version"]),
        "podman": run.podman.version() if run.podman else {},
        "ferry_commit": git("rev-parse", "HEAD"), "ferry_src_dirty": bool(git("status", "--porcelain", "--", "src")),
        "ferry_system_check_ready": ready,
        "zstandard": importlib.metadata.version("zstandard"),
        "pipe_max_size": int(open("/proc/sys/fs/pipe-max-size").read()),
        "podman_flags": "--runtime runc --cgroup-manager cgroupfs --storage-driver overlay; run with "
                        "--ulimit nofile=1024:1024 --ulimit nproc=1000:1000",
    }


def _iptables_chains() -> dict[str, set[str]]:
    text = proc.run(["iptables-save"], desc="iptables-save", timeout=30, check=False).stdout
    chains: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.setdefault(table, set()).add(line[1:].split()[0])
    return chains


def _link_exists(name: str) -> bool:
    return proc.run(["ip", "link", "show", name], desc="ip link show", timeout=10, check=False).returncode == 0


class CniLeftovers:
    """podman's CNI creates the cni-podman0 bridge and CNI-* iptables chains
    and never removes them; remove those this run created."""

    def __init__(self):
        self.bridge_existed = _link_exists("cni-podman0")
        self.chains = _iptables_chains()

    def remove(self) -> list[str]:
        problems = []
        if not self.bridge_existed and _link_exists("cni-podman0"):
            done = proc.run(["ip", "link", "del", "cni-podman0"], desc="ip link del", timeout=10, check=False)
            if done.returncode != 0:
                problems.append(f"ip link del cni-podman0: {done.stderr.strip()}")
        after = _iptables_chains()
        text = proc.run(["iptables-save"], desc="iptables-save", timeout=30, check=False).stdout
        table = ""
        for table_name, chains in after.items():
            new = {c for c in chains - self.chains.get(table_name, set()) if c.startswith("CNI-")}
            if not new:
                continue
            for line in text.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                if table == table_name and line.startswith("-A ") and any(f"-j {c}" in line for c in new) \
                        and line.split()[1] not in new:
                    spec = shlex.split(line)[2:]
                    proc.run(["iptables", "-t", table_name, "-D", line.split()[1], *spec],
                             desc="iptables -D", timeout=10, check=False)
            for chain in new:
                proc.run(["iptables", "-t", table_name, "-F", chain], desc="iptables -F", timeout=10, check=False)
            for chain in new:
                done = proc.run(["iptables", "-t", table_name, "-X", chain], desc="iptables -X", timeout=10,
                                check=False)
                if done.returncode != 0:
                    problems.append(f"iptables -t {table_name} -X {chain}: {done.stderr.strip()}")
        return problems


def _remove_base(base: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        mounted = [line.split()[4] for line in f if line.split()[4].startswith(base.rstrip("/") + "/")]
    if mounted:
        return [f"left {base} in place: still mounted there: {', '.join(mounted[:5])}"]
    done = proc.run(["rm", "-rf", "--one-file-system", "--", base], desc=f"remove {base}", timeout=300, check=False)
    return [] if done.returncode == 0 else [f"rm -rf {base}: {proc.tail(done.stderr, 2)}"]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def results_path(quick: bool, now: dt.datetime, kind: str = "") -> str:
    """bench/results/[KIND-]DATE[-quick].json, with the time added when taken."""
    stem = (f"{kind}-" if kind else "") + now.strftime("%Y-%m-%d") + ("-quick" if quick else "")
    path = os.path.join(RESULTS, stem + ".json")
    if os.path.exists(path):
        path = os.path.join(RESULTS, f"{stem}-{now.strftime('%H%M%S')}.json")
    return path


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                     epilog="The migration benchmarks are python -m bench.migration.")
    parser.add_argument("--quick", action="store_true", help="redis 256 MiB only, 3 repeats")
    parser.add_argument("--workloads", help="comma-separated: " + ", ".join(wl.BY_NAME))
    parser.add_argument("--repeats", type=int, help="repeats per workload (default 5; 3 for >= 1 GiB and --quick)")
    parser.add_argument("--no-gzip", action="store_true", help="skip ferry's .tar.gz variant")
    parser.add_argument("--no-none", action="store_true",
                        help="skip ferry's --compress none (.tar) variant (run at redis-1g, else the largest redis)")
    parser.add_argument("--frozen-rounds", type=int, default=4,
                        help="extra local --leave-running checkpoints per engine and redis workload, for "
                             "CRIU's frozen time (default 4)")
    parser.add_argument("--skip-ps", action="store_true")
    parser.add_argument("--ps-rounds", type=int, default=4)
    parser.add_argument("--ps-per-round", type=int, default=5)
    parser.add_argument("--skip-commands", action="store_true", help="skip inspect, logs and images")
    parser.add_argument("--commands-rounds", type=int, default=4)
    parser.add_argument("--commands-per-round", type=int, default=5)
    parser.add_argument("--skip-start", action="store_true",
                        help="skip run -d until the service answers, and rm -f of the running container")
    parser.add_argument("--start-rounds", type=int, default=6)
    parser.add_argument("--skip-rss", action="store_true",
                        help="skip sampling ferry's own RssAnon during its archive rounds")
    parser.add_argument("--rss-workloads", default="redis-2g",
                        help="workloads whose ferry archive rounds sample ferry's RssAnon (default redis-2g)")
    parser.add_argument("--client-interval", type=float, default=0.001,
                        help="seconds between the gap client's requests")
    parser.add_argument("--client-max-seconds", type=float, default=600)
    parser.add_argument("--out", help="results file (default bench/results/<date>[-quick].json)")
    parser.add_argument("--no-report", action="store_true", help="do not render docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.frozen_rounds < 0:
        parser.error("--frozen-rounds must be >= 0")
    unknown = [n for n in args.rss_workloads.split(",") if n and n not in wl.BY_NAME]
    if unknown:
        parser.error(f"unknown --rss-workloads {unknown}; known: {', '.join(wl.BY_NAME)}")
    if args.workloads:
        unknown = [n for n in args.workloads.split(",") if n not in wl.BY_NAME]
        if unknown:
            parser.error(f"unknown workloads {unknown}; known: {', '.join(wl.BY_NAME)}")
        selected = [wl.BY_NAME[n] for n in args.workloads.split(",")]
    else:
        selected = list(wl.QUICK if args.quick else wl.FULL)

    signal.signal(signal.SIGTERM, _interrupt)
    now = dt.datetime.now()
    try:
        notes = preflight()
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    cni = CniLeftovers()
    base = tempfile.mkdtemp(prefix="ferry-bench-", dir="/var/tmp")
    snapshot = snapshot_ferry(base)
    run = Run(args, base)
    run.notes += notes
    status = 0
    log(f"ferry vs podman: {', '.join(w.name for w in selected)} (temp dir {base})")
    try:
        run.execute(selected)
    except KeyboardInterrupt:
        run.notes.append("interrupted")
        status = 130
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        run.failures.append({"workload": "-", "engine": "-", "step": "run", "rep": -1, "error": str(exc)})
        status = 1
    except Exception:  # keep the partial results and clean up; then show the bug
        traceback.print_exc()
        status = 1
    finally:
        log("cleaning up")
        problems = run.cleanup() + cni.remove() + _remove_base(base)
        for problem in problems:
            print(f"bench: cleanup: {problem}", file=sys.stderr)
        run.notes += [f"cleanup: {p}" for p in problems]
    document = {
        "schema": 1, "mode": "quick" if args.quick else "full", "date": now.isoformat(timespec="seconds"),
        "seconds": time.monotonic() - STARTED, "workloads": [w.name for w in selected],
        "environment": {**getattr(run, "env", {}), "ferry_snapshot": snapshot,
                        "ferry_commit_at_end": _version(["git", "-C", REPO, "rev-parse", "HEAD"])},
        "images": getattr(run, "layers", {}), "workload_info": run.workload_info,
        "settings": {"client_interval": args.client_interval, "gzip_variant": not args.no_gzip,
                     "frozen_rounds": args.frozen_rounds,
                     "none_variant_workload": run.none_workload,
                     "ps_rounds": args.ps_rounds, "ps_per_round": args.ps_per_round,
                     "commands_rounds": None if args.skip_commands else args.commands_rounds,
                     "commands_per_round": args.commands_per_round, "commands_log_lines": COMMANDS_LINES,
                     "start_rounds": None if args.skip_start else args.start_rounds,
                     "start_poll_interval": START_POLL_INTERVAL,
                     "rss_workloads": sorted(run.rss_workloads), "rss_interval": rss.INTERVAL},
        "samples": run.samples, "failures": run.failures, "notes": run.notes,
    }
    save_results(document, args.out or results_path(args.quick, now), report=not args.no_report)
    return status


def save_results(document: dict, path: str, *, report: bool) -> None:
    """The run's JSON under bench/results, then docs/benchmarks.md from all of them."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(document, f, indent=1)
        f.write("\n")
    log(f"results: {os.path.relpath(path, REPO)} ({len(document['samples'])} samples, "
        f"{len(document['failures'])} failures)")
    if report and document["samples"]:
        from bench import report as renderer
        renderer.main([])


if __name__ == "__main__":
    sys.exit(main())
