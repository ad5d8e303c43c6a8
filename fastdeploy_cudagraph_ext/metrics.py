"""Does a worker's decode run on graphs? Counts per worker, two log lines, and fastdeploy_cudagraph_ext_* metrics.

Counted in every worker (for the log lines): replays per captured size with their padded tokens, eager decode
steps by reason, captures (seconds, memory) per size, DeepEP buffer cleans. A "decode step" is one forward of a
graph-optimized model with tokens in it (the MTP draft model's forwards count too); a forward that warms up or
captures a graph counts as a capture, not a step.

Exported only where FastDeploy runs prometheus_client in multiprocess mode: its API server sets
PROMETHEUS_MULTIPROC_DIR before any worker starts (fastdeploy/__init__.py calls
setup_multiprocess_prometheus() from fastdeploy/metrics/prometheus_multiprocess_setup.py), workers inherit it, and
its /metrics route merges every process's files with multiprocess.MultiProcessCollector
(fastdeploy/metrics/metrics.py, get_filtered_metrics; read at develop c1b7c083da60). Without prometheus_client or
without the directory: one log line, no metrics, nothing else changes.

The serving path pays dict increments only: the prometheus values (files) take the deltas every FLUSH_INTERVAL_S
seconds, at the capture report and at exit. One thread per worker drives the forwards, so the counters take no lock.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger("fastdeploy_cudagraph_ext")

PREFIX = "fastdeploy_cudagraph_ext_"
SIZE_NOT_CAPTURED = "size_not_captured"
OVER_LARGEST_SIZE = "over_largest_size"
CAPTURE_FAILED = "capture_failed"
PREFILL_OR_MIXED = "prefill_or_mixed"
GRAPHS_OFF = "graphs_off"
REASONS = (SIZE_NOT_CAPTURED, OVER_LARGEST_SIZE, CAPTURE_FAILED, PREFILL_OR_MIXED, GRAPHS_OFF)
UNKNOWN_SIZE = "unknown"  # 2.5 under MTP: the entry is chosen on the device (the wrapper cannot read it cheaply)
FLUSH_INTERVAL_S = 5.0
COVERAGE_INTERVAL_S = 60.0
MIB = 1 << 20


class _Exporter:
    """The prometheus_client metrics of this process (values in PROMETHEUS_MULTIPROC_DIR files)."""

    def __init__(self, prometheus_client: object) -> None:
        Counter, Gauge = prometheus_client.Counter, prometheus_client.Gauge
        # registry=None: the values go to this process's files all the same; FastDeploy's collector reads them.
        self.replays = Counter(PREFIX + "replays", "Decode steps replayed, by captured size", ["size"], registry=None)
        self.graph_tokens = Counter(PREFIX + "graph_tokens", "Tokens the replayed graphs were captured for "
                                    "(captured size per replay)", ["size"], registry=None)
        self.padded_tokens = Counter(PREFIX + "padded_tokens", "Padded tokens replayed (captured size minus real "
                                     "tokens), by captured size", ["size"], registry=None)
        self.eager = Counter(PREFIX + "eager_decode_steps", "Decode steps run eagerly, by reason", ["reason"],
                             registry=None)
        self.cleans = Counter(PREFIX + "deepep_buffer_cleans", "DeepEP low-latency buffer cleans", registry=None)
        self.capture_seconds = Gauge(PREFIX + "capture_seconds", "Seconds of the call that captured the size "
                                     "(its warmups included)", ["size"], registry=None, multiprocess_mode="liveall")
        self.graph_memory = Gauge(PREFIX + "graph_memory_bytes", "Device memory the capture of the size reserved",
                                  ["size"], registry=None, multiprocess_mode="liveall")
        self.c10 = Gauge(PREFIX + "c10_info", "The c10 verdict of this worker (value 1)", ["verdict"], registry=None,
                         multiprocess_mode="liveall")
        self.group = Gauge(PREFIX + "group_info", "Each feature group's verdict in this worker (value 1)",
                           ["group", "verdict"], registry=None, multiprocess_mode="liveall")


def _load_exporter(environ: dict[str, str]) -> _Exporter | None:
    """The exporter, or None with the one log line that says why there are no metrics."""
    if not environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.info("fastdeploy-cudagraph-ext: metrics off: PROMETHEUS_MULTIPROC_DIR is unset (FastDeploy's API server "
                 "sets it for its workers); the coverage log lines still run")
        return None
    try:
        import prometheus_client
    except ImportError:
        log.info("fastdeploy-cudagraph-ext: metrics off: prometheus_client is not installed (pip install "
                 "prometheus_client, as FastDeploy's own metrics need); the coverage log lines still run")
        return None
    return _Exporter(prometheus_client)


class GraphStats:
    """This worker's counts; the hooks in the patches call it, one line each."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.exporter: _Exporter | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every count (at start and in tests)."""
        self.replayed_at: dict[tuple[object, int], int] = {}  # (size, real tokens) -> replays: one count per replay
        self.eager_steps: dict[str, int] = {}  # reason -> steps
        self.captures: dict[object, tuple[float, int]] = {}  # size -> (seconds, bytes)
        self.cleans = 0
        self.step_tokens = 0  # real tokens of the forward in progress
        self.served = True  # the graph backend counted the forward in progress itself (an eager entry, a capture)
        # The captured size the forward in progress replayed (UNKNOWN_SIZE where the device picks it), or None: set
        # by the graph backend's wrapper (one attribute store on the replay path), counted when the step ends.
        self.replayed_size: object = None
        self.paused = False  # inside capture_model: its dummy forwards are not serving steps
        self._exported: dict[str, dict] = {}  # what the exporter already holds, per counter
        self._window = (0, 0, 0, {})  # replays, graph tokens, padded tokens, eager reasons at the last coverage line
        now = self._clock()
        self._flush_due = now + FLUSH_INTERVAL_S
        self._coverage_due = now + COVERAGE_INTERVAL_S

    def start(self, environ: dict[str, str]) -> None:
        """At activation: the environment is read here, once."""
        if self.exporter is None:
            self.exporter = _load_exporter(environ)
            if self.exporter is not None:
                atexit.register(self.flush)

    # -- the serving path ---------------------------------------------------------------------------------------
    def begin_step(self, tokens: int) -> None:
        self.step_tokens = tokens
        self.served = False
        self.replayed_size = None

    def end_step(self, eager_reason: Callable[[object, object], str], backend: object, meta: object) -> None:
        """The forward begun by begin_step has returned: one replay of its size, else (when the graph backend did
        not count it) one eager step, its reason, eager_reason(backend, meta), asked only then."""
        size = self.replayed_size
        if size is not None:
            self.replayed_size = None
            self.replayed(size)
        elif not self.served:
            self.eager(eager_reason(backend, meta))

    def replayed(self, size: object) -> None:
        if not self.paused:  # one dict increment per replay; replays and padding are summed from it when read
            key = size, self.step_tokens
            counts = self.replayed_at
            counts[key] = counts.get(key, 0) + 1
            if self._clock() >= self._flush_due:
                self.tick()

    def eager(self, reason: str) -> None:
        self.served = True
        if self.paused and reason != CAPTURE_FAILED:
            return
        self.eager_steps[reason] = self.eager_steps.get(reason, 0) + 1
        if self._clock() >= self._flush_due:
            self.tick()

    @property
    def replays(self) -> dict[object, int]:
        """Replays per captured size."""
        replays: dict[object, int] = {}
        for (size, _), count in self.replayed_at.items():
            replays[size] = replays.get(size, 0) + count
        return replays

    @property
    def padded(self) -> dict[object, int]:
        """Padded tokens (captured size minus real tokens) replayed per captured size (none for UNKNOWN_SIZE)."""
        padded: dict[object, int] = {}
        for (size, tokens), count in self.replayed_at.items():
            if size != UNKNOWN_SIZE:
                padded[size] = padded.get(size, 0) + (size - tokens) * count
        return padded

    @property
    def graph_tokens(self) -> dict[object, int]:
        """Tokens the replayed graphs were captured for (captured size per replay), per size (none for
        UNKNOWN_SIZE)."""
        return {s: int(s) * n for s, n in self.replays.items() if s != UNKNOWN_SIZE}

    def capturing(self) -> None:
        self.served = True  # a warmup or capture forward: counted by capture_cost, not as a step

    def deepep_cleaned(self) -> None:
        self.cleans += 1

    @contextmanager
    def capture_cost(self, memory_reserved: Callable[[], int]) -> Iterator[Callable[[object], None]]:
        """Around a backend call that may capture: yields `captured(size)`, to be called after the block for each
        size the call captured; it records the call's seconds and the memory reserved meanwhile for that size. A
        call that raises counts one eager step, capture_failed."""
        self.capturing()
        start, before = time.perf_counter(), memory_reserved()
        cost: list[tuple[float, int]] = []

        def captured(size: object) -> None:  # the target and the draft model capture the same sizes: summed
            seconds, grown = cost[0]
            old_seconds, old_grown = self.captures.get(size, (0.0, 0))
            self.captures[size] = (old_seconds + seconds, old_grown + grown)

        try:
            yield captured
        except BaseException:
            self.eager(CAPTURE_FAILED)
            raise
        cost.append((time.perf_counter() - start, max(0, memory_reserved() - before)))

    # -- reports ------------------------------------------------------------------------------------------------
    def capture_report(self, c10_verdict: str, group_verdicts: dict[str, str]) -> str:
        """The summary line after capture_model (and the verdicts as metrics)."""
        sizes = sorted(self.captures, reverse=True)
        seconds = sum(c[0] for c in self.captures.values())
        mib = sum(c[1] for c in self.captures.values()) / MIB
        line = (f"fastdeploy-cudagraph-ext: captured {len(sizes)} graphs in this worker (pid {os.getpid()}): sizes "
                f"{sizes}, {seconds:.2f} s, {mib:.1f} MiB; c10 {c10_verdict}; groups "
                + (", ".join(f"{g} {v}" for g, v in group_verdicts.items()) or "none"))
        log.info(line)
        exporter = self.exporter
        if exporter is not None:
            for size, (secs, grown) in self.captures.items():
                exporter.capture_seconds.labels(size=str(size)).set(secs)
                exporter.graph_memory.labels(size=str(size)).set(grown)
            exporter.c10.labels(verdict=c10_verdict).set(1)
            for group, verdict in group_verdicts.items():
                exporter.group.labels(group=group, verdict=verdict).set(1)
        self.flush()
        return line

    def coverage_line(self) -> str:
        """Share of the decode steps since the last line that replayed, their padding, the top eager reason."""
        replays = sum(self.replays.values())
        graph_tokens = sum(self.graph_tokens.values())
        padded = sum(self.padded.values())
        last_replays, last_tokens, last_padded, last_eager = self._window
        self._window = (replays, graph_tokens, padded, dict(self.eager_steps))
        replays, graph_tokens, padded = replays - last_replays, graph_tokens - last_tokens, padded - last_padded
        eager = {r: n - last_eager.get(r, 0) for r, n in self.eager_steps.items() if n > last_eager.get(r, 0)}
        steps = replays + sum(eager.values())
        top = max(eager.items(), key=lambda item: item[1]) if eager else None
        return (f"fastdeploy-cudagraph-ext: coverage: {replays}/{steps} decode steps replayed "
                f"({100.0 * replays / steps if steps else 0.0:.1f}%), padding {padded}/{graph_tokens} graph tokens "
                f"({100.0 * padded / graph_tokens if graph_tokens else 0.0:.1f}%), top eager reason: "
                + (f"{top[0]} ({top[1]} steps)" if top else "none"))

    def tick(self) -> None:
        """Flush the deltas; log the coverage line when its interval is up."""
        now = self._clock()
        self._flush_due = now + FLUSH_INTERVAL_S
        self.flush()
        if now >= self._coverage_due:
            self._coverage_due = now + COVERAGE_INTERVAL_S
            log.info(self.coverage_line())

    def flush(self) -> None:
        """Hand the counts since the last flush to prometheus_client."""
        exporter = self.exporter
        if exporter is None:
            return
        for name, counts, counter, label in (
            ("replays", self.replays, exporter.replays, "size"),
            ("graph_tokens", self.graph_tokens, exporter.graph_tokens, "size"),
            ("padded", self.padded, exporter.padded_tokens, "size"),
            ("eager", self.eager_steps, exporter.eager, "reason"),
            ("cleans", {None: self.cleans}, exporter.cleans, None),
        ):
            exported = self._exported.setdefault(name, {})
            for key, total in counts.items():
                delta = total - exported.get(key, 0)
                if delta > 0 or key not in exported:  # a zero is a sample too (no padding at this size)
                    (counter if label is None else counter.labels(**{label: str(key)})).inc(delta)
                    exported[key] = total


STATS = GraphStats()  # this process's counts; never replaced (the patches bind it at import)


def c10_verdict(status: object) -> str:
    """The c10 verdict in one word, from the policy's C10Status."""
    if status.follows_framework:
        return "follows_framework"
    if status.bridge is not None:
        return "bridged_set_moves_framework" if status.set_moves_framework else "bridged"
    return "unbridged"


def reports_capture(capture_model: Callable) -> Callable:
    """capture_model, its dummy forwards not counted as serving steps, then the worker's summary line."""

    @functools.wraps(capture_model)
    def capture_model_then_report(self: object, *args: object, **kwargs: object) -> object:
        STATS.paused = True
        try:
            result = capture_model(self, *args, **kwargs)
        finally:
            STATS.paused = False
        STATS.capture_report(*_verdicts())
        return result

    return capture_model_then_report


def _verdicts() -> tuple[str, dict[str, str]]:
    from . import activation  # the registry's verdicts, read after they are settled; nothing flows back
    from .stream_policy import installed_policy

    registry = activation.registry()
    groups = {v.group: v.verdict for v in registry.group_verdicts()} if registry is not None else {}
    policy = installed_policy()  # none: nothing was captured through the plugin
    return (c10_verdict(policy.c10) if policy is not None else "not probed"), groups
