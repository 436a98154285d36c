"""Migration benchmarks (issue 13): the client gap of a redis moving between
two "hosts" of this machine, four ways side by side in one run.

    python -m bench.migration [--quick] [--sizes 256,1g,2g] [--repeats N]
                              [--variants streamed,lazy,podman,bare]

For each size (redis filled by DEBUG POPULATE to 256 MiB, 1 GiB, 2 GiB) one
redis per kind is started and filled once, then each repeat moves it once
per kind (the order rotates from repeat to repeat), while a client on ONE
TCP connection to the container's own address sends a GET every millisecond
(bench.client, as the gap round of bench.run); the gap is its longest time
without a reply:

  streamed  `ferry --root A migrate NAME --to http://127.0.0.1:PORT
            --token-file F --tcp-established --print-stats` to the agent of
            root B (`ferry --root B serve`); the next repeat moves it back
  lazy      the same with --lazy (skipped, with a note, when `ferry migrate
            --help` does not list it)
  podman    `podman container checkpoint --export F --tcp-established`,
            `cp F` to another directory, `podman rm`, `podman container
            restore --import F --tcp-established`: on one host, so the gap
            holds all of it
  bare      HOST-NOTES' runc + CRIU lazy recipe, with no engine around it
            (bench.baremigrate): the floor of a lazy migration

Samples go to bench/results/migration-<date>[-quick].json; bench.report
renders the table, the targets and the phase timelines into
docs/benchmarks.md. Every root, agent, container, netns and link is removed
at the end, also after a failure (names start with "bm").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import types

from bench import migstats as ms
from bench import proc, run as benchrun, workloads as wl
from bench.baremigrate import BareLazy
from bench.engines import Ferry, Podman, PodmanNamespace, criu_errors, die_with_parent, print_stats, wait_until
from bench.proc import BenchError

REPO = benchrun.REPO
NAME = "bm-redis"
FERRY_IP = "10.90.251.20"     # far from the low addresses IPAM hands out first
AGENT_READY_TIMEOUT = 60
QUICK_SIZES = (256,)
FULL_SIZES = (256, 1024, 2048)
log = benchrun.log


class Agent:
    """`ferry --root ROOT serve` on loopback, with its own token file."""

    def __init__(self, ferry: Ferry, base: str, label: str):
        self.ferry = ferry
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_file = os.path.join(base, f"token-{label}")
        self.log_path = os.path.join(base, f"agent-{label}.log")
        self.process: subprocess.Popen | None = None

    def start(self) -> "Agent":
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.ferry.argv("serve", "--listen", f"127.0.0.1:{self.port}", "--token-file", self.token_file),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=proc.env(), preexec_fn=die_with_parent)
        wait_until(self._ready, f"the agent of {self.ferry.root}", AGENT_READY_TIMEOUT, pause=0.1)
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise BenchError(f"the agent of {self.ferry.root} exited ({self.process.returncode}): {self.said()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return os.path.exists(self.token_file)
        except OSError:
            return False

    def said(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return proc.tail(f.read(), lines)
        except OSError:
            return ""

    def stop(self) -> list[str]:
        if self.process is None or self.process.poll() is not None:
            return []
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            return [f"the agent of {self.ferry.root} ignored SIGTERM"]
        return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MigrationRun(benchrun.Recorder):
    def __init__(self, args, base: str):
        self.args = args
        self.base = base
        self.samples: list[dict] = []
        self.failures: list[dict] = []
        self.notes: list[str] = []
        self.skipped: dict[str, str] = {}
        self.workload_info: dict = {}
        self.variants = list(args.variants)
        self.roots = {"a": Ferry(os.path.join(base, "ferry-a")), "b": Ferry(os.path.join(base, "ferry-b"))}
        self.agents: dict[str, Agent] = {}
        self.where = "a"
        self.namespace: PodmanNamespace | None = None
        self.podman: Podman | None = None
        self.bare: BareLazy | None = None
        self.transfer = os.path.join(base, "transfer")
        os.makedirs(os.path.join(self.transfer, "source"), mode=0o700)
        os.makedirs(os.path.join(self.transfer, "destination"), mode=0o700)
        self.env: dict = {}
        self.images: dict = {}

    # ---- setup ---------------------------------------------------------------------------
    def setup(self) -> None:
        ferry_a = self.roots["a"]
        if ms.LAZY in self.variants:
            help_text = ferry_a.cli("migrate", "--help", desc="migrate --help").stdout
            if not ms.lazy_supported(help_text):
                self.skip(ms.LAZY, "`ferry migrate --help` does not list --lazy in this checkout")
        if ms.PODMAN_PATH in self.variants:
            self.namespace = PodmanNamespace(os.path.join(self.base, "podman"))
            self.namespace.start()
            self.podman = Podman(os.path.join(self.base, "podman"), self.namespace)
        self.env = benchrun.environment(types.SimpleNamespace(ferry=ferry_a, podman=self.podman))
        engines = [ferry_a] + ([self.podman] if self.podman else [])
        log("preparing the redis image (ferry roots A and B" + (", podman" if self.podman else "") + ")")
        self.images = wl.prepare_images({"redis"}, ferry_a, engines, self.base, log)
        image = wl.QUICK[0].image
        self.roots["b"].build_debian(image, ["redis-server"], wl.REDIS_CMD)
        ids = {k: self._image_id(f, image) for k, f in self.roots.items()}
        self.images["ferry_image_ids"] = ids
        if len(set(ids.values())) != 1:
            raise BenchError(f"roots A and B hold different image IDs for {image}: {ids}")
        if any(v in self.variants for v in (ms.STREAMED, ms.LAZY)):
            for label, ferry in self.roots.items():
                self.agents[label] = Agent(ferry, self.base, label).start()
        if ms.BARE in self.variants:
            self.bare = BareLazy(os.path.join(self.base, "bare"), wl.debian_rootfs_tar(["redis-server"]),
                                 wl.REDIS_CMD, log=log)
            self.bare.setup()
            self.notes.append(f"bare recipe: bridge {self.bare.bridge}, container address {self.bare.ip}, "
                              f"netns {', '.join(s.netns for s in self.bare.sides.values())}")

    def skip(self, variant: str, why: str) -> None:
        if variant in self.variants:
            self.variants.remove(variant)
        self.skipped[variant] = why
        self.notes.append(f"{variant} skipped: {why}")
        log(f"NOTE: {variant} skipped: {why}")

    @staticmethod
    def _image_id(ferry: Ferry, ref: str) -> str:
        return json.loads(ferry.cli("image", "inspect", ref, desc=f"image inspect {ref}").stdout)[0]["Id"]

    # ---- containers -----------------------------------------------------------------------
    def start(self, kind: str, w: wl.Workload) -> dict:
        if kind == "ferry":
            for ferry in self.roots.values():
                ferry.rm(NAME, force=True)
            self.where = "a"
            ferry = self.roots["a"]
            ferry.run(NAME, w.image, list(w.command), ip=FERRY_IP)
            ip = ferry.ip(NAME)
        elif kind == "podman":
            self.podman.rm(NAME, force=True)
            self.podman.run(NAME, w.image, list(w.command))
            ip = self.podman.ip(NAME)
        else:
            ip = self.bare.start()
        wl.wait_ready(w, ip)
        info = wl.fill(w, ip)
        info["ip"] = ip
        log(f"  {kind} {NAME}: {info['keys']} keys, used_memory {info['used_memory'] >> 20} MiB "
            f"in {info['fill_seconds']:.1f} s ({ip})")
        return info

    def remove(self, kind: str) -> None:
        if kind == "ferry":
            for ferry in self.roots.values():
                ferry.rm(NAME, force=True)
        elif kind == "podman" and self.podman:
            self.podman.rm(NAME, force=True)

    # ---- the rounds ----------------------------------------------------------------------------
    def ferry_round(self, variant: str, w: wl.Workload, info: dict, rep: int) -> None:
        src_label = self.where
        dst_label = "b" if src_label == "a" else "a"
        source, agent = self.roots[src_label], self.agents[dst_label]
        argv = source.argv("migrate", NAME, "--to", agent.url, "--token-file", agent.token_file,
                           "--tcp-established", "--print-stats", *(["--lazy"] if variant == ms.LAZY else []))
        benchrun.settle()
        client = self._client(w, info["ip"])
        try:
            t0 = time.monotonic()
            done = proc.run(argv, desc=f"ferry migrate {'--lazy ' if variant == ms.LAZY else ''}{src_label}->"
                            f"{dst_label}", timeout=2 * w.timeout(), check=False)
            t1 = time.monotonic()
            if done.returncode != 0:
                raise BenchError(f"ferry migrate ({variant}, {src_label} -> {dst_label}): exit {done.returncode}\n"
                                 f"{proc.tail(done.stderr or done.stdout)}" + criu_errors(done.stderr + done.stdout)
                                 + f"\nagent {dst_label}: {agent.said(3)}")
            self.where = dst_label
            result = self._finish(client, t1)
        except BaseException:
            benchrun.stop_client(client)
            raise
        stats = print_stats(done.stdout)
        phases = stats.get("phases") or {}
        timeline = ms.ferry_timeline(phases, t1 - t0)
        self._record(w, variant, rep, info, result, t0, t1, timeline,
                     downtime=stats.get("downtime"), total=t1 - t0,
                     more={"stats": stats, "from": src_label, "to": dst_label})

    def podman_round(self, w: wl.Workload, info: dict, rep: int) -> None:
        exported = os.path.join(self.transfer, "source", f"{w.name}-{rep}.tar.gz")
        copied = os.path.join(self.transfer, "destination", f"{w.name}-{rep}.tar.gz")
        steps: list[tuple[str, float, float]] = []
        benchrun.settle()
        client = self._client(w, info["ip"])
        attempts = 0
        try:
            t0 = time.monotonic()
            for attempts in range(1, benchrun.IN_FLIGHT_ATTEMPTS + 1):
                start = time.monotonic()
                try:
                    self.podman.checkpoint(NAME, export=exported, tcp=True, timeout=w.timeout())
                    steps.append(("checkpoint --export", start, time.monotonic()))
                    break
                except BenchError as exc:
                    if "In-flight" not in str(exc) or attempts == benchrun.IN_FLIGHT_ATTEMPTS:
                        raise
                    steps.append(("checkpoint (in-flight, retried)", start, time.monotonic()))
            start = time.monotonic()
            proc.run(["cp", exported, copied], desc="cp the archive", timeout=w.timeout())
            os.unlink(exported)
            steps.append(("cp", start, time.monotonic()))
            start = time.monotonic()
            self.podman.rm(NAME)
            steps.append(("rm", start, time.monotonic()))
            start = time.monotonic()
            self.podman.restore(name=NAME, archive=copied, tcp=True, new_name=False, timeout=w.timeout())
            t1 = time.monotonic()
            steps.append(("restore --import", start, t1))
            result = self._finish(client, t1)
        except BaseException:
            benchrun.stop_client(client)
            raise
        finally:
            for path in (exported, copied):
                if os.path.exists(path):
                    os.unlink(path)
        info["ip"] = self.podman.ip(NAME)
        self._record(w, ms.PODMAN_PATH, rep, info, result, t0, t1, ms.steps_timeline(steps, t0),
                     downtime=t1 - t0, total=t1 - t0, more={"checkpoint_attempts": attempts})

    def bare_round(self, w: wl.Workload, info: dict, rep: int) -> None:
        benchrun.settle()
        client = self._client(w, info["ip"])
        try:
            def restored(t: float) -> None:
                client.stdin.write(f"restored {t!r}\n")
                client.stdin.flush()
            moved = self.bare.migrate(on_restored=restored)
            result = benchrun.finish_client(client, timeout=self.args.client_max_seconds)
        except BaseException:
            benchrun.stop_client(client)
            raise
        t0 = moved["t0"]
        self._record(w, ms.BARE, rep, info, result, t0, moved["restored_at"], moved["timeline"],
                     downtime=moved["downtime"], total=moved["seconds"],
                     more={"images_bytes": moved["images_bytes"], "to": self.bare.current})

    def _client(self, w: wl.Workload, ip: str) -> subprocess.Popen:
        return benchrun.start_client(w, ip, self.args.client_interval, self.args.client_max_seconds)

    def _finish(self, client: subprocess.Popen, restored_at: float) -> dict:
        client.stdin.write(f"restored {restored_at!r}\n")
        client.stdin.flush()
        return benchrun.finish_client(client, timeout=self.args.client_max_seconds)

    def _record(self, w: wl.Workload, variant: str, rep: int, info: dict, result: dict, t0: float, t1: float,
                timeline: list[dict], *, downtime, total, more: dict) -> None:
        wl.verify(w, info["ip"], info)
        ok = result.get("first_reply_after_restore") is not None
        gap = result["max_gap"] if ok else None
        extra = {"timeline": timeline, "client_gap": ms.client_gap(result, t0), "returned": t1 - t0,
                 "kept_connection": result.get("kept_connection"),
                 "client": {k: result.get(k) for k in ("replies", "reconnects", "connections", "ended",
                                                       "first_reply_after_restore", "errors")}, **more}
        self.sample(w.name, variant, "gap", rep, gap, extra)
        self.sample(w.name, variant, "downtime", rep, downtime)
        self.sample(w.name, variant, "total", rep, total)
        if gap is None:
            raise BenchError(f"the client got no reply after the migration ({result.get('ended')}, "
                             f"errors: {(result.get('errors') or [])[-3:]})")
        kept = "kept its connection" if result.get("kept_connection") else f"reconnected {result.get('reconnects')}x"
        phases = ", ".join(f"{p['phase']} {p['end'] - p['start']:.2f}" for p in timeline)
        log(f"  {variant:9} gap {gap:6.2f} s (done after {total:.2f} s; client {kept}) [{phases}]")

    # ---- one size --------------------------------------------------------------------------------
    def size(self, mib: int, repeats: int) -> None:
        w = wl.redis(mib)
        kinds = {ms.STREAMED: "ferry", ms.LAZY: "ferry", ms.PODMAN_PATH: "podman", ms.BARE: "bare"}
        needed = []
        for variant in self.variants:
            if kinds[variant] not in needed:
                needed.append(kinds[variant])
        infos: dict[str, dict | None] = {}
        for kind in needed:
            try:
                infos[kind] = self.start(kind, w)
            except BenchError as exc:
                infos[kind] = None
                self.failure(w.name, kind, "start", -1, exc)
        self.workload_info[w.name] = {"fill_bytes": w.fill_bytes, "containers": dict(infos)}
        rounds = {ms.STREAMED: lambda info, rep: self.ferry_round(ms.STREAMED, w, info, rep),
                  ms.LAZY: lambda info, rep: self.ferry_round(ms.LAZY, w, info, rep),
                  ms.PODMAN_PATH: lambda info, rep: self.podman_round(w, info, rep),
                  ms.BARE: lambda info, rep: self.bare_round(w, info, rep)}
        try:
            for rep in range(repeats):
                order = ms.order(list(self.variants), rep)
                log(f"{w.name}: repeat {rep + 1}/{repeats} ({', '.join(order)})")
                for variant in order:
                    kind = kinds[variant]
                    info = infos.get(kind)
                    if info is None:
                        continue
                    try:
                        rounds[variant](info, rep)
                    except BenchError as exc:
                        self.failure(w.name, variant, "migrate", rep, exc)
                        try:   # start over: a fresh container, filled again
                            infos[kind] = self.start(kind, w)
                        except BenchError as again:
                            infos[kind] = None
                            self.failure(w.name, kind, "restart", rep, again)
        finally:
            for kind in needed:
                try:
                    self.remove(kind)
                except BenchError as exc:
                    self.notes.append(f"removing {kind}'s {w.name}: {exc}")

    def execute(self, sizes: list[int], repeats: int) -> None:
        self.setup()
        log(f"variants: {', '.join(self.variants) or 'none'}; sizes: {', '.join(ms.size_label(s) for s in sizes)}")
        for mib in sizes:
            try:
                self.size(mib, repeats)
            except BenchError as exc:
                self.failure(ms.size_label(mib), "all", "size", -1, exc)

    # ---- cleanup ----------------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        problems: list[str] = []
        for agent in self.agents.values():
            problems += agent.stop()
        if self.bare is not None:
            try:
                problems += self.bare.close()
            except Exception as exc:   # keep going: the rest must still be removed
                problems.append(f"bare: {exc!r}")
        for label, ferry in self.roots.items():
            try:
                problems += ferry.close()
            except BenchError as exc:
                problems.append(f"ferry root {label}: {exc}")
        if self.podman is not None:
            try:
                problems += self.podman.close()
            except BenchError as exc:
                problems.append(str(exc))
        if self.namespace is not None:
            self.namespace.stop()
        return problems


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.migration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="redis 256 MiB only, 1 repeat")
    parser.add_argument("--sizes", help="MiB, comma-separated, e.g. 256,1g,2g (default 256,1g,2g)")
    parser.add_argument("--repeats", type=int, help="repeats per size (default 3; 1 with --quick)")
    parser.add_argument("--variants", default=",".join(ms.VARIANTS),
                        help=f"comma-separated subset of {','.join(ms.VARIANTS)}")
    parser.add_argument("--client-interval", type=float, default=0.001)
    parser.add_argument("--client-max-seconds", type=float, default=600)
    parser.add_argument("--out", help="results file (default bench/results/migration-<date>[-quick].json)")
    parser.add_argument("--no-report", action="store_true", help="do not render docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in ms.VARIANTS]
    if unknown or not variants:
        parser.error(f"unknown variants {unknown}; known: {', '.join(ms.VARIANTS)}")
    args.variants = variants
    try:
        args.sizes = ms.parse_sizes(args.sizes) if args.sizes else list(QUICK_SIZES if args.quick else FULL_SIZES)
    except ValueError as exc:
        parser.error(str(exc))
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, benchrun._interrupt)
    now = dt.datetime.now()
    try:
        notes = benchrun.preflight()
    except BenchError as exc:
        print(f"bench.migration: error: {exc}", file=sys.stderr)
        return 2
    cni = benchrun.CniLeftovers()
    base = tempfile.mkdtemp(prefix="bm-mig-", dir="/var/tmp")
    snapshot = benchrun.snapshot_ferry(base)
    run = MigrationRun(args, base)
    run.notes += notes
    status = 0
    log(f"migration: redis {', '.join(ms.size_label(s) for s in args.sizes)}, {args.repeats} repeat(s), "
        f"{', '.join(args.variants)} (temp dir {base})")
    try:
        run.execute(args.sizes, args.repeats)
    except KeyboardInterrupt:
        run.notes.append("interrupted")
        status = 130
    except BenchError as exc:
        print(f"bench.migration: error: {exc}", file=sys.stderr)
        run.failures.append({"workload": "-", "engine": "-", "step": "run", "rep": -1, "error": str(exc)})
        status = 1
    except Exception:  # keep the partial results and clean up; then show the bug
        traceback.print_exc()
        run.failures.append({"workload": "-", "engine": "-", "step": "run", "rep": -1,
                             "error": traceback.format_exc()[-2000:]})
        status = 1
    finally:
        log("cleaning up")
        problems = run.cleanup() + cni.remove() + benchrun._remove_base(base)
        for problem in problems:
            print(f"bench.migration: cleanup: {problem}", file=sys.stderr)
        run.notes += [f"cleanup: {p}" for p in problems]
    document = {
        "schema": 1, "kind": "migration", "mode": "quick" if args.quick else "full",
        "date": now.isoformat(timespec="seconds"), "seconds": time.monotonic() - benchrun.STARTED,
        "sizes": [ms.size_label(s) for s in args.sizes], "variants": list(args.variants),
        "skipped": run.skipped, "repeats": args.repeats,
        "environment": {**run.env, "ferry_snapshot": snapshot,
                        "ferry_commit_at_end": benchrun._version(["git", "-C", REPO, "rev-parse", "HEAD"])},
        "images": run.images, "workload_info": run.workload_info,
        "settings": {"client_interval": args.client_interval, "ferry_ip": FERRY_IP},
        "samples": run.samples, "failures": run.failures, "notes": run.notes,
    }
    benchrun.save_results(document, args.out or benchrun.results_path(args.quick, now, "migration"),
                          report=not args.no_report)
    if status == 0 and (run.failures or not run.samples):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
