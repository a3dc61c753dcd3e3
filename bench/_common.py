"""What every benchmark script shares: statistics, interleaved rounds, tables with ratios,
JSON results, plots, worker processes and server processes.

The machine is small and shared, so absolute numbers are noisy: every script measures
trio_sync and its peers in the same run, round by round (A B A B ...), and reports
ratios, which the noise moves far less than it moves the numbers themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import trio

from trio_sync.cli._args import count
from trio_sync.server._process import tune_collector

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "out"

# --- statistics ----------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of the sorted values (nearest rank); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def median(values: Sequence[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return statistics.median(present) if present else math.nan


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds, and the number of samples."""
    return {
        "n": len(seconds),
        "p50_ms": 1000 * percentile(seconds, 0.50),
        "p99_ms": 1000 * percentile(seconds, 0.99),
        "max_ms": 1000 * max(seconds) if seconds else math.nan,
    }


def rounds_latency_summary(per_round: Sequence[Sequence[float]]) -> dict[str, float]:
    """Like :func:`latency_summary` over several rounds: p50 and p99 are the median of
    each round's own (on a shared machine one noisy round would drag pooled samples
    along), max is the maximum of all, n counts all samples."""
    summaries = [latency_summary(samples) for samples in per_round if samples]
    return {
        "n": sum(len(samples) for samples in per_round),
        "p50_ms": median([s["p50_ms"] for s in summaries]),
        "p99_ms": median([s["p99_ms"] for s in summaries]),
        "max_ms": max((s["max_ms"] for s in summaries), default=math.nan),
    }


# --- formatting ----------------------------------------------------------------------

NA = "n/a"


def fmt_rate(value: float | None) -> str:
    """Events per second, with thousands separators."""
    if value is None or math.isnan(value):
        return NA
    return f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return NA
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def fmt_ratio(numerator: float | None, denominator: float | None) -> str:
    """``numerator / denominator`` as "0.42x", or n/a when either side is missing."""
    if numerator is None or denominator is None:
        return NA
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return NA
    return f"{numerator / denominator:.2f}x"


@dataclass
class Table:
    """A plain-text table: the first ``left`` columns (labels) left-aligned, the others
    (numbers) right-aligned."""

    title: str
    columns: Sequence[str]
    left: int = 1
    rows: list[Sequence[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(cells)

    def render(self) -> str:
        widths = [
            max(len(str(row[i])) for row in [self.columns, *self.rows])
            for i in range(len(self.columns))
        ]

        def line(cells: Sequence[str]) -> str:
            aligned = (
                f"{cell:<{width}}" if i < self.left else f"{cell:>{width}}"
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            return "  ".join(aligned).rstrip()

        header = line(self.columns)
        body = [line(row) for row in self.rows]
        return "\n".join([self.title, header, "-" * len(header), *body, *self.notes])

    def print(self) -> None:
        print(self.render(), flush=True)
        print(flush=True)


def progress(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)


# --- running rounds ------------------------------------------------------------------


async def interleave(
    rounds: int,
    contenders: Sequence[str],
    measure: Callable[[str, int], Awaitable[T]],
) -> dict[str, list[T]]:
    """Runs ``measure(contender, round)`` for every contender, round after round
    (A B C, A B C, ...), so that a noisy moment on the machine hits all of them alike."""
    results: dict[str, list[T]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        for name in contenders:
            results[name].append(await measure(name, round_index))
    return results


async def pace(rate: float, count: int, action: Callable[[int], Awaitable[None]]) -> float:
    """Calls ``action(i)`` ``count`` times on a fixed schedule of ``rate`` per second.

    A call that overruns its slot makes the next ones late: they run back to back until
    the schedule is met again, so a contender too slow for ``rate`` runs flat out.
    Returns the rate actually reached: calls per second from the first call to the last
    return.
    """
    start = trio.current_time()
    for i in range(count):
        await trio.sleep_until(start + i / rate)
        await action(i)
    elapsed = trio.current_time() - start
    return count / elapsed if elapsed > 0 else math.nan


# --- command line and results --------------------------------------------------------


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every measuring script takes. Sizes are checked here, before anything
    runs: a size of 0 or less is refused (none of them means "the default"), and the
    results folder must be writable now, not after a run of minutes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds"
    )
    parser.add_argument(
        "--rounds", type=positive_int, help="interleaved rounds (default per script)"
    )
    parser.add_argument(
        "--out-dir",
        type=writable_folder,
        default=str(DEFAULT_OUT),  # a string, so that argparse checks it too
        help="where the JSON and PNG go",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _at_least(_number(text, int), 1)


#: An argparse type: a whole number of at least 0 (the command line's own).
non_negative_int = count


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    return _at_least(_number(text, float), 0.0)


def _number(text: str, kind: Callable[[str], T]) -> T:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _at_least(value: Any, minimum: float) -> Any:
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value:g} is not at least {minimum:g}")
    return value


def number_list(minimum: int = 1) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated whole numbers, each at least ``minimum``."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not comma-separated whole numbers"
            ) from None
        low = [value for value in values if value < minimum]
        if low:
            raise argparse.ArgumentTypeError(f"{low[0]} is not at least {minimum}")
        return values

    return parse


def existing_folder(text: str) -> str:
    """An argparse type: a folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return text


def writable_folder(text: str) -> Path:
    """An argparse type: a folder results can be written to (made if missing)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot write results to {text}: {exc.strerror or exc}"
        ) from None
    return path


def run_script(main: Callable[[], Any]) -> None:
    """Runs a script's ``main``: an ``async def`` under Trio, or a plain function (which
    calls ``trio.run`` itself), returning an exit status or None. SIGTERM (``kill``,
    ``timeout``, a CI runner) stops it as Ctrl-C does (:func:`stop_like_ctrl_c`), so that
    servers and worker processes are stopped and temporary folders removed; an
    interruption ends with one line and exit status 130, not a traceback of every task it
    cancelled."""
    stop_like_ctrl_c()
    try:
        status = trio.run(main) if inspect.iscoroutinefunction(main) else main()
    except BaseException as exc:
        if not interrupted(exc):
            raise
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    if status:
        raise SystemExit(status)


def stop_like_ctrl_c() -> None:
    """From now on SIGTERM interrupts this process as Ctrl-C does: forwarded as SIGINT,
    which Trio raises as KeyboardInterrupt where it is safe to, even in the middle of
    synchronous work. A shell without job control starts background commands with
    SIGINT ignored: a benchmark takes it back, or SIGTERM would be ignored too."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _forward_as_sigint)


def _forward_as_sigint(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGINT)


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or holds, a KeyboardInterrupt (what else an interruption
    raised on its way, a connection closed under a task, say, is its consequence)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return False


def quiet_when_interrupted(function: Callable[..., object], *args: Any) -> None:
    """Runs ``function(*args)`` in a worker process: a Ctrl-C that reaches the whole
    process group ends it quietly (the benchmark's own process says "interrupted")."""
    try:
        function(*args)
    except BaseException as exc:
        if not interrupted(exc):
            raise


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }


def describe_machine() -> str:
    info = machine()
    load = ", ".join(f"{x:.1f}" for x in info["load_average"])
    return f"{info['cores']} cores, Python {info['python']}, {info['platform']}, load {load}"


def write_json(out_dir: Path, name: str, payload: Mapping[str, Any]) -> Path:
    """Writes ``<out_dir>/<name>.json`` whole or not at all: the results of an earlier run
    stay as they were if this one cannot be written (a full disk, say).

    Raises:
        SystemExit: It could not be written (one line saying why, exit status 1).
    """
    path = Path(out_dir) / f"{name}.json"
    body = {"benchmark": name, "machine": machine(), "argv": sys.argv[1:], **payload}
    text = json.dumps(body, indent=2, default=_jsonable, allow_nan=True) + "\n"
    try:
        replace_whole(path, text.encode())
    except OSError as exc:
        raise SystemExit(f"results not written to {path}: {exc.strerror or exc}") from None
    print(f"results: {path}", flush=True)
    return path


def replace_whole(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file beside it and a rename.

    Raises:
        OSError: Nothing was written (the temporary file is removed).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, _new_file_mode())  # mkstemp's 0600 would hide it from others
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _new_file_mode() -> int:
    """The mode a file made with open() gets here (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- plots ---------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: pip install matplotlib)", flush=True)
        return None
    return plt


def plot_cdfs(
    path: Path,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    xlabel: str,
    title: str,
) -> None:
    """One panel per entry of ``panels``; in each, the CDF of every series (log x)."""
    plt = _pyplot()
    if plt is None:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, (panel, series) in zip(axes[0], panels.items(), strict=True):
        for label, values in series.items():
            if not values:
                continue
            ordered = sorted(values)
            fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
            axis.step(ordered, fractions, where="post", label=label)
        axis.set_xscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("fraction of events")
        axis.set_title(panel)
        axis.grid(alpha=0.3, which="both")
        axis.legend()
    figure.suptitle(title)
    _save(figure, plt, path)


def plot_lines(
    path: Path,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Each series as a line of (x, y) points (marked when there are few); ``styles``
    gives matplotlib keywords per series (color, linestyle)."""
    plt = _pyplot()
    if plt is None:
        return
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, points in series.items():
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        style = {"marker": "o" if len(points) <= 30 else None, **(styles or {}).get(label, {})}
        axis.plot(xs, ys, label=label, **style)
    for log, scale, ticks in (
        (logx, axis.set_xscale, axis.xaxis),
        (logy, axis.set_yscale, axis.yaxis),
    ):
        if log:
            scale("log")
            ticks.set_major_formatter(ScalarFormatter())  # 100, not 10^2
            ticks.set_minor_formatter(NullFormatter())
    if logx:  # label the measured points (10, 100, 500), not the decades
        axis.set_xticks(sorted({x for points in series.values() for x, _ in points}))
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    _save(figure, plt, path)


def _save(figure: Any, plt: Any, path: Path) -> None:
    """Saves the plot whole or not at all; a plot that cannot be written is said in one
    line and the run goes on (its results are in the JSON)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    try:
        replace_whole(path, buffer.getvalue())
    except OSError as exc:
        print(f"plot not written to {path}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return
    print(f"plot: {path}", flush=True)


# --- processes and the machine -------------------------------------------------------


def raise_fd_limit() -> int:
    """Raises this process's soft limit on open files to the hard limit; returns it.

    Hundreds of WebSocket connections (and their SQLite files) outrun the usual soft
    limit of 1024 long before they outrun anything else.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux: /proc/PID/status), or 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux: /proc/PID/stat), or NaN."""
    try:
        # The command name (field 2) may hold spaces: count fields after its ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def temp_dir(prefix: str, base: str | None = None) -> Iterator[Path]:
    """A temporary directory, removed afterwards (real files: SQLite fsyncs to disk)."""
    path = Path(tempfile.mkdtemp(prefix=f"trio_sync_bench_{prefix}_", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class ServerProcess:
    """A server running in its own process, as started by :func:`spawn_server`."""

    url: str
    process: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)


#: How to start each kind of server in its own process; each prints a line with its
#: ws:// URL once it accepts connections (the same contract as ``trio-sync serve``).
def trio_sync_server_command(db_path: Path | str) -> list[str]:
    # A SQLite file or a postgresql:// URL (bench/scaleout.py).
    # WARNING: the server's per-connection INFO lines would interleave with the table.
    # -P: the working directory is not put on sys.path, so that a server spawned from a
    # checkout runs the trio_sync that this process imports (PYTHONPATH=<another
    # version> compares versions), not the checkout's.
    return [
        sys.executable,
        "-P",
        "-m",
        "trio_sync.cli",
        "serve",
        "--db",
        str(db_path),
        "--log-level",
        "WARNING",
    ]


def relay_server_command() -> list[str]:
    return [sys.executable, str(BENCH_DIR / "relay.py")]


async def serve_until_signalled(
    serve: Callable[..., Awaitable[Any]], name: str, host: str, port: int
) -> None:
    """Runs ``serve(host, port, task_status=...)`` (which reports its ws:// URL), prints
    ``<name> at <url>`` once it accepts connections (the contract :func:`spawn_server`
    reads), and stops it on SIGINT or SIGTERM. The cycle collector is tuned as
    ``trio-sync serve`` tunes it, so that every contender's server pays the same for it."""
    tune_collector()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, host, port)
            print(f"{name} at {url}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


@contextlib.contextmanager
def spawn_server(command: Sequence[str], timeout: float = 30.0) -> Iterator[ServerProcess]:
    """Starts ``command``, waits for the ws:// URL it prints, and stops it with SIGTERM
    at the end (SIGKILL if it does not stop in 10 s)."""
    raise_fd_limit()  # the child inherits our limit (a preexec_fn is unsafe with threads)
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=None,  # its errors go straight to ours, where someone will read them
        text=True,
    )
    try:
        url = _read_url(process, timeout)
        yield ServerProcess(url=url, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_url(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{process.args!r} exited before printing its URL")
        for word in line.split():
            if word.startswith("ws://"):
                return word
    raise RuntimeError(f"{process.args!r} printed no ws:// URL within {timeout:g}s")


class Worker:
    """A child process (spawned, not forked: the parent runs a Trio loop) that runs
    ``target(connection, *args)`` and talks to the parent over a pipe, one message per
    request and one per answer."""

    def __init__(self, target: Callable[..., None], *args: object) -> None:
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self._process = context.Process(target=target, args=(child, *args), daemon=True)
        self._process.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    async def receive(self) -> Any:
        """The worker's next message (bound the wait with ``trio.fail_after``)."""
        return await pipe_receive(self._parent)

    async def ask(self, message: object) -> Any:
        """Sends ``message`` and returns the worker's answer."""
        self._parent.send(message)
        return await self.receive()

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._parent.send(None)  # "stop", for workers that listen for it
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._parent.close()


@contextlib.contextmanager
def workers(
    target: Callable[..., None], args_per_worker: Sequence[tuple[object, ...]]
) -> Iterator[list[Worker]]:
    started = [Worker(target, *args) for args in args_per_worker]
    try:
        yield started
    finally:
        for worker in started:
            worker.close()


async def pipe_receive(connection: Connection) -> Any:
    """The next message on a pipe, without blocking the Trio loop (the pipe is a Unix
    socket pair: Trio can wait for it to be readable)."""
    await trio.lowlevel.wait_readable(connection.fileno())
    return connection.recv()


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as possible (the first ones get more)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
