"""Echo benchmark: N concurrent real-time echo calls through one client process for D seconds.

For each workload N and each client kind, a fresh sandbox runs in a process of its own
(``sandbox_server.py``: no recordings) and the client in another; this script, in a third, places
N calls through the sandbox's HTTP API (the caller speaks a 440 Hz tone), waits until the client
has answered them all, lets them settle, then measures a window of D seconds:

- the client's CPU time (all threads, from ``/proc``) per call-minute, in all and split into
  user space (Python: what the SDK's code costs) and the kernel (system calls: per-frame
  ``recv``/``send``/``epoll_wait``, much the same for every client), the user time per echoed
  frame, and its share of one core; its peak RSS (``VmHWM``);
- the sandbox's own CPU share: near 100 % it is the bottleneck, and the workload says nothing
  about the client (the sandbox is one Python process, the machine may have few cores);
- from the sandbox's per-call statistics: underrun milliseconds and excess bytes during the
  window (differences of its counters), and echo latency p50/p99 (the median over calls of each
  call's own percentiles, over the whole call).

Client kinds: ``ours-asyncio`` and ``ours-trio`` (this SDK, ``client_ours.py``), ``ours-uvloop``
(the same on asyncio with uvloop's event loop, anyio's ``use_uvloop``; a row of its own, never
the asyncio figure; skipped when uvloop is not installed), ``official``
(the official asyncio SDK from the package registry, ``client_official.py``, run with the Python
of its own virtual environment, ``--official-python``) and ``baseline`` (bare asyncio + wsproto,
``client_baseline.py``: the floor). Once a kind clearly falls behind at some N (underruns above 1 %
of the call time, or calls left unanswered) its larger workloads are skipped, and once the sandbox
itself cannot keep real time at some N, every larger workload is (``--no-skip`` runs them anyway).
A workload disturbed by other programs on the machine is run again (``--retries``).

    python benchmarks/bench.py --n 10,50,100 --seconds 20 \
        --kinds ours-asyncio,ours-trio,official,baseline \
        --official-python .nox/official-sdk/bin/python [--json out.json] [--readme]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import importlib.util
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
KINDS = ("ours-asyncio", "ours-trio", "ours-uvloop", "official", "baseline")
#: What ``--kinds`` runs unless told: every kind but uvloop's, which needs an extra install.
DEFAULT_KINDS = ("ours-asyncio", "ours-trio", "official", "baseline")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Underruns above this share of the window's call time mean "clearly overloaded": skip larger N.
OVERLOAD_SHARE = 0.01
#: A process this busy (share of one core) is saturated; its workload's numbers are suspect.
SATURATED_PCT = 90.0
#: A run whose calls got less audio than this share of real time was starved by the sandbox.
MIN_ECHOED_PCT = 97.0
#: Other programs using this much of a core during a window make its numbers unreliable.
OTHER_LOAD_PCT = 10.0
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


# --- processes -----------------------------------------------------------------------------------


class Proc:
    """A child process whose stdout lines (JSON) are collected by a thread."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.stderr"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=HERE
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass

    def expect(self, timeout: float, key: str | None = None, value: str | None = None) -> Any:
        """The next JSON line (with ``line[key] == value`` if given), or RuntimeError."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.popen.poll() is not None and self.lines.empty()):
                raise RuntimeError(f"{self.name}: no {value or 'output'} line; see {self.log_path}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if key is None or line.get(key) == value:
                return line

    def window(self) -> dict[str, Any]:
        """Ask for the process's probe window (SIGUSR1) and return it."""
        self.popen.send_signal(signal.SIGUSR1)
        line = self.expect(10, "event", "window")
        line.pop("event")
        return dict(line)

    def cpu_s(self) -> float:
        """User + system CPU seconds so far, all threads."""
        user, system = self.cpu_split_s()
        return user + system

    def cpu_split_s(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far, all threads (``utime``, ``stime``)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def memory_kib(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak RSS), in KiB."""
        found: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line.split(":")[0]] = int(line.split()[1])
        return found

    def stop(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """SIGTERM, then the ``done`` line if the process prints one; SIGKILL if it hangs."""
        done = None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                done = self.expect(timeout, "event", "done")
            except RuntimeError:
                pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return done

    def log_count(self, needle: str) -> int:
        with open(self.log_path, errors="replace") as f:
            return f.read().count(needle)


def machine_busy_s() -> float:
    """CPU seconds spent so far by the whole machine, all cores, anything but idle."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_until_quiet(limit_s: float, threshold_pct: float = 15.0) -> float:
    """Wait (at most ``limit_s``) until the machine's other work uses under ``threshold_pct`` of
    one core over a second; returns the last load seen (share of one core, in %)."""
    deadline = time.monotonic() + limit_s
    while True:
        b0, t0 = machine_busy_s(), time.monotonic()
        time.sleep(1.0)
        load = 100 * (machine_busy_s() - b0) / (time.monotonic() - t0)
        if load < threshold_pct or time.monotonic() >= deadline:
            return round(load, 1)


# --- the sandbox's HTTP API ----------------------------------------------------------------------


class Api:
    """A keep-alive connection to the sandbox's HTTP API."""

    def __init__(self, http_url: str) -> None:
        host, port = http_url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body)
        self.conn.request(method, path, payload, {"content-type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return json.loads(data)

    def calls(self, ids: set[str]) -> list[dict[str, Any]]:
        return [c for c in self.call("GET", "/sandbox/calls")["calls"] if c["call_id"] in ids]

    def close(self) -> None:
        self.conn.close()


# --- one run -------------------------------------------------------------------------------------


def client_argv(kind: str, args: argparse.Namespace, base_url: str) -> list[str]:
    common = ["--base-url", base_url, "--sample-rate", str(args.sample_rate)]
    if kind.startswith("ours-"):
        backend = kind.removeprefix("ours-")
        argv = [sys.executable, "client_ours.py", "--backend", backend]
        if args.cprofile:
            argv += ["--cprofile", str(Path(args.cprofile).resolve().with_suffix(f".{kind}.prof"))]
        return argv + common
    if kind == "official":
        return [args.official_python, "client_official.py", *common]
    if kind == "baseline":
        return [sys.executable, "client_baseline.py", *common]
    raise ValueError(f"unknown client kind {kind!r}")


def percentile_summary(calls: list[dict[str, Any]]) -> dict[str, float | None]:
    lat = [c["stats"]["echo_latency_ms"] for c in calls if c["stats"]["echo_latency_ms"]]
    if not lat:
        return {"p50": None, "p99": None, "p99_max": None}
    return {
        "p50": round(statistics.median(x["p50"] for x in lat), 2),
        "p99": round(statistics.median(x["p99"] for x in lat), 2),
        "p99_max": round(max(x["p99"] for x in lat), 2),
    }


def run_one(kind: str, n: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """One workload: a fresh sandbox and client, N calls, a window of ``args.seconds``."""
    result: dict[str, Any] = {"kind": kind, "n": n}
    if args.wait_quiet:
        result["load_before_pct"] = wait_until_quiet(args.wait_quiet)
    sandbox = Proc(
        f"sandbox-{kind}-{n}",
        [sys.executable, "sandbox_server.py", "--backend", args.sandbox_backend],
        log_dir,
    )
    client: Proc | None = None
    api: Api | None = None
    try:
        info = sandbox.expect(20)
        client = Proc(f"client-{kind}-{n}", client_argv(kind, args, info["base_url"]), log_dir)
        client.expect(30, "event", "ready")
        api = Api(info["http_url"])

        # Place the calls at a steady rate (a burst of offers is a different benchmark).
        hangup = n / args.ramp + args.settle + args.seconds + 120  # a safety net: we stop first
        body = {"caller": {"tone_hz": 440}, "caller_hangup_after_s": hangup}
        ids: set[str] = set()
        started = time.monotonic()
        for i in range(n):
            delay = started + i / args.ramp - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ids.add(api.call("POST", "/sandbox/calls", body)["call_id"])

        # Wait until every call is answered (or give up and measure what there is).
        deadline = time.monotonic() + 30 + n / 10
        while True:
            answered = sum(c["state"] == "ANSWERED" for c in api.calls(ids))
            if answered == n or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        result["answered"] = answered
        result["ramp_s"] = round(time.monotonic() - started, 1)
        time.sleep(args.settle)

        before = {c["call_id"]: c["stats"] for c in api.calls(ids)}
        for proc in (client, sandbox):
            proc.window()  # start the lag and GC probes' window afresh
        split0 = client.cpu_split_s()
        t0, client0, sandbox0 = time.monotonic(), sum(split0), sandbox.cpu_s()
        machine0 = machine_busy_s()
        time.sleep(args.seconds)
        split1 = client.cpu_split_s()
        t1, client1, sandbox1 = time.monotonic(), sum(split1), sandbox.cpu_s()
        machine1 = machine_busy_s()
        result["client_probe"], result["sandbox_probe"] = client.window(), sandbox.window()
        client_mem, sandbox_mem = client.memory_kib(), sandbox.memory_kib()
        after = api.calls(ids)

        window = t1 - t0
        frame = args.sample_rate * 2 // 50  # bytes of one 20 ms frame
        echoed = sum(
            c["stats"]["agent_bytes_received"] - before[c["call_id"]]["agent_bytes_received"]
            for c in after
        )
        client_s, sandbox_s, other_s = client1 - client0, sandbox1 - sandbox0, machine1 - machine0
        live = [c for c in after if c["state"] == "ANSWERED"]
        underrun = sum(
            c["stats"]["underrun_ms"] - before[c["call_id"]]["underrun_ms"] for c in after
        )
        result.update(
            window_s=round(window, 2),
            live_at_end=len(live),
            client_cpu_s=round(client1 - client0, 2),
            client_cpu_pct=round(100 * (client1 - client0) / window, 1),
            cpu_s_per_call_min=round((client1 - client0) / (n * window / 60), 4),
            user_s_per_call_min=round((split1[0] - split0[0]) / (n * window / 60), 4),
            sys_s_per_call_min=round((split1[1] - split0[1]) / (n * window / 60), 4),
            client_peak_rss_mib=round(client_mem.get("VmHWM", 0) / 1024, 1),
            client_rss_mib=round(client_mem.get("VmRSS", 0) / 1024, 1),
            sandbox_cpu_pct=round(100 * (sandbox1 - sandbox0) / window, 1),
            sandbox_rss_mib=round(sandbox_mem.get("VmRSS", 0) / 1024, 1),
            # Everything else the machine did meanwhile (this script, other programs): when it
            # is more than a few percent of a core, the numbers are not to be trusted.
            other_load_pct=round(100 * (other_s - client_s - sandbox_s) / window, 1),
            # Over each call's whole life (from its first echoed audio to the window's end): for
            # an echo, a gap leaves one more frame in the sandbox's playout buffer for good, so
            # the window's own count misses excursions no larger than earlier ones.
            underrun_ms=sum(c["stats"]["underrun_ms"] for c in after),
            calls_with_underrun=sum(c["stats"]["underrun_ms"] > 0 for c in after),
            underrun_ms_window=underrun,
            calls_with_underrun_window=sum(
                c["stats"]["underrun_ms"] > before[c["call_id"]]["underrun_ms"] for c in after
            ),
            excess_bytes=sum(
                c["stats"]["excess_bytes"] - before[c["call_id"]]["excess_bytes"] for c in after
            ),
            # Audio the agent sent back in the window, against what real time would have sent:
            # under 100 % when calls went short of audio (a saturated sandbox sends less).
            echoed_pct=round(100 * echoed / (n * window * args.sample_rate * 2), 1),
            cpu_us_per_frame=round(1e6 * client_s / max(1, echoed / frame), 1),
            user_us_per_frame=round(1e6 * (split1[0] - split0[0]) / max(1, echoed / frame), 1),
            protocol_errors=sum(c["stats"]["protocol_errors"] for c in after),
            echo_latency_ms=percentile_summary(after),
        )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        result["error"] = str(exc)
    finally:
        if api is not None:
            api.close()
        if client is not None:
            done = client.stop()
            if done is not None:
                result["client_done"] = done
        sandbox.stop()
        result["sandbox_clock_skips"] = sandbox.log_count("behind; skipping")
    return result


def measure(kind: str, n: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """``run_one``, again (up to ``--retries`` times) while other programs disturbed the window;
    the least disturbed run counts."""
    runs: list[dict[str, Any]] = []
    for attempt in range(1 + args.retries):
        print(f"# {kind} N={n} (run {attempt + 1}) ...", file=sys.stderr, flush=True)
        r = run_one(kind, n, args, log_dir)
        print(json.dumps(r), file=sys.stderr, flush=True)
        runs.append(r)
        if r.get("other_load_pct", 0.0) < OTHER_LOAD_PCT:
            break
    best = min(runs, key=lambda r: r.get("other_load_pct", 0.0))
    best["attempts"] = len(runs)
    return best


def sandbox_saturated(r: dict[str, Any]) -> bool:
    """The sandbox could not keep real time: a busy core, a skipping clock, calls short of audio."""
    if "sandbox_cpu_pct" not in r:
        return False
    return bool(
        r["sandbox_cpu_pct"] >= SATURATED_PCT
        or r["sandbox_clock_skips"]
        or r["echoed_pct"] < MIN_ECHOED_PCT
    )


def overloaded(r: dict[str, Any], seconds: float) -> bool:
    if "error" in r or r.get("answered") != r["n"]:
        return True
    return bool(r["underrun_ms_window"] > OVERLOAD_SHARE * r["n"] * seconds * 1000)


# --- reporting -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| client | N | CPU s / call-min: all (user + sys) | user us / frame | client CPU % "
        "| peak RSS MiB "
        "| underrun ms (calls): whole calls | in window | excess B | echo p50 / p99 ms "
        "| loop lag max ms: client / sandbox | GC max ms | sandbox CPU % | notes |"
    )
    rows = [head, "|" + "---|" * 14]
    for r in results:
        if "skipped" in r or "error" in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error']}"
            rows.append(f"| {r['kind']} | {r['n']} |" + " |" * 11 + f" {why} |")
            continue
        lat, cp, sp = r["echo_latency_ms"], r["client_probe"], r["sandbox_probe"]
        notes = []
        if r["answered"] != r["n"]:
            notes.append(f"{r['answered']} answered")
        if r["echoed_pct"] < MIN_ECHOED_PCT:
            notes.append(f"echoed {r['echoed_pct']:.0f} % of real time")
        if sandbox_saturated(r):
            notes.append("sandbox saturated")
        if r["client_cpu_pct"] >= SATURATED_PCT:
            notes.append("client saturated")
        if r["other_load_pct"] >= OTHER_LOAD_PCT:
            notes.append(f"other programs used {r['other_load_pct']:.0f} % of a core")
        rows.append(
            f"| {r['kind']} | {r['n']} | {r['cpu_s_per_call_min']:.3f} "
            f"({r['user_s_per_call_min']:.3f} + {r['sys_s_per_call_min']:.3f}) "
            f"| {r['user_us_per_frame']:.0f} | {r['client_cpu_pct']:.0f} "
            f"| {r['client_peak_rss_mib']:.0f} "
            f"| {r['underrun_ms']} ({r['calls_with_underrun']}) "
            f"| {r['underrun_ms_window']} ({r['calls_with_underrun_window']}) "
            f"| {r['excess_bytes']} | {fmt(lat['p50'], '.1f')} / {fmt(lat['p99'], '.1f')} "
            f"| {fmt(cp['lag_max_ms'], '.0f')} / {fmt(sp['lag_max_ms'], '.0f')} "
            f"| {fmt(cp['gc_max_ms'], '.0f')} | {r['sandbox_cpu_pct']:.0f} | {'; '.join(notes)} |"
        )
    return "\n".join(rows)


def largest_clean(
    results: list[dict[str, Any]], kinds: list[str], key: str = "underrun_ms"
) -> dict[str, int | None]:
    """Per kind, the largest N run with every call answered and given real-time audio, with no
    underrun (counted by ``key``) and no excess byte."""
    best: dict[str, int | None] = dict.fromkeys(kinds)
    for r in results:
        if key not in r or r.get("answered") != r["n"]:
            continue
        if r[key] == 0 and r["excess_bytes"] == 0 and r["echoed_pct"] >= MIN_ECHOED_PCT:
            current = best.get(r["kind"])
            best[r["kind"]] = max(r["n"], current or 0)
    return best


def report(results: list[dict[str, Any]], args: argparse.Namespace, env: dict[str, Any]) -> str:
    kinds = args.kinds
    best = largest_clean(results, kinds)
    in_window = largest_clean(results, kinds, "underrun_ms_window")
    lines = [
        f"Run {env['date']} on {env['cpus']} x {env['cpu_model']}, Linux {env['kernel']}, "
        f"Python {env['python']}; window {args.seconds:g} s per workload after "
        f"{args.settle:g} s of settling, calls placed at {args.ramp:g}/s, "
        f"{args.sample_rate} Hz, sandbox on {args.sandbox_backend}.",
        "",
        table(results),
        "",
        "Largest N with zero underruns (and no excess byte) over the whole calls: "
        + ", ".join(f"{k} {fmt(best[k])}" for k in kinds)
        + "; in the measured window: "
        + ", ".join(f"{k} {fmt(in_window[k])}" for k in kinds)
        + ".",
    ]
    saturated = sorted({r["n"] for r in results if sandbox_saturated(r)})
    if saturated:
        lines.append(
            f"The sandbox could not keep real time from N={saturated[0]} on: larger workloads "
            "measure the sandbox, not the client."
        )
    return "\n".join(lines)


def update_readme(text: str) -> None:
    path = HERE / "README.md"
    current = path.read_text() if path.exists() else f"{README_START}\n{README_END}\n"
    head, rest = current.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_START}\n{text}\n{README_END}{tail}")


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="10,25,50,100,200,500", help="workloads (10,25,...,500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (20)")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help=f"({','.join(KINDS)})")
    parser.add_argument("--official-python", help="Python of the official SDK's environment")
    parser.add_argument("--ramp", type=float, default=10.0, help="calls placed per second (10)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the window (3)")
    parser.add_argument("--sample-rate", type=int, choices=(8000, 16000, 24000), default=24000)
    parser.add_argument("--sandbox-backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="S",
        help="before each run, wait up to S s for other programs to go idle (120; 0: never)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="run a workload again while other programs disturbed it (2)",
    )
    parser.add_argument("--no-skip", action="store_true", help="run every N, even after overload")
    parser.add_argument("--json", metavar="FILE", help="write every result as JSON here")
    parser.add_argument("--readme", action="store_true", help="update benchmarks/README.md")
    parser.add_argument("--cprofile", metavar="FILE", help="profile our clients (FILE.<kind>.prof)")
    args = parser.parse_args(argv)
    args.ns = sorted({int(x) for x in args.n.split(",")})
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {','.join(KINDS)}")
    if args.official_python:
        args.official_python = os.path.abspath(args.official_python)
    if "official" in args.kinds and not args.official_python:
        parser.error(
            "the official kind needs --official-python (the Python of a virtual environment "
            "with telcoflow==1.0.0 from the registry); `nox -s bench` makes one"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = machine()
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/telcoflow-bench"))
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    behind: dict[str, int] = {}
    sandbox_limit: int | None = None
    for n in args.ns:
        for kind in args.kinds:
            if sandbox_limit is not None and not args.no_skip:
                why = f"the sandbox saturated at N={sandbox_limit}"
                results.append({"kind": kind, "n": n, "skipped": why})
                continue
            if kind in behind and not args.no_skip:
                results.append({"kind": kind, "n": n, "skipped": f"behind at N={behind[kind]}"})
                continue
            if kind == "ours-uvloop" and importlib.util.find_spec("uvloop") is None:
                results.append({"kind": kind, "n": n, "skipped": "uvloop is not installed"})
                continue
            r = measure(kind, n, args, log_dir)
            results.append(r)
            if overloaded(r, args.seconds):
                behind[kind] = n
        if any(sandbox_saturated(r) for r in results if r["n"] == n):
            sandbox_limit = n
    text = report(results, args, env)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": env, "results": results}, indent=2))
    if args.readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
