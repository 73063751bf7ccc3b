"""Shared pieces of the benchmark scripts: machine description, timing, memory, MaxSim.

Nothing here is timed itself. The scripts run each measured phase in a fresh subprocess
(see :func:`run_phase`) so that one phase's peak memory never leaks into another's.

Memory is read from ``/proc/self/status``: ``VmRSS`` (resident now) and ``VmHWM`` (the
resident high-water mark). Writing ``5`` to ``/proc/self/clear_refs`` resets the high-water
mark to the current RSS (Linux >= 4.0), so a phase can measure the peak of its own work
*above* what it held before (interpreter, libraries, model). Where that file cannot be
written, the peak falls back to ``ru_maxrss`` for the whole process and the figures say so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- machine and threads


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pin_threads(threads: int, blas_threads: int = 1) -> None:
    """Give the encoders ``threads`` threads and numpy's BLAS ``blas_threads``.

    Must run before numpy/torch/onnxruntime start their pools: the environment variables
    are read once, at their first use. BLAS defaults to one thread because search and
    prefilter products are small: measured on the 2-core machine under load, OpenBLAS's
    thread hand-off made a [100, 64] x [64, 1024] product 10x slower with 2 threads than 1.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(blas_threads)


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what platform knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    """The SIMD features that decide int8 speed (AVX2, AVX-512 VNNI, ...), when listed."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in wanted if flag in present]
    return []


def _ram_gib() -> float:
    """Total RAM in GiB from /proc/meminfo (0 where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return 0.0


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``names`` ("-" for the ones that are not installed)."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


def machine_description(threads: int) -> dict[str, Any]:
    """What a reader needs to compare figures: CPU, cores, RAM, OS, Python, versions."""
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores_available": available_cores(),
        "cores_total": os.cpu_count() or 0,
        "threads_used": threads,
        "ram_gib": round(_ram_gib(), 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": package_versions(
            [
                "edge-colbert",
                "numpy",
                "onnxruntime",
                "tokenizers",
                "usearch",
                "sqlite-utils",
                "torch",
                "transformers",
                "sentence-transformers",
                "pylate",
                "voyager",
            ]
        ),
    }


def machine_markdown(machine: dict[str, Any]) -> str:
    """The machine description as a short markdown list."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v != "-")
    flags = ", ".join(machine["cpu_flags"]) or "none of AVX2/AVX-512/VNNI listed"
    return "\n".join(
        [
            f"- CPU: {machine['cpu']} ({flags})",
            f"- cores: {machine['cores_available']} available of {machine['cores_total']}; "
            f"{machine['threads_used']} threads for every encoder (onnxruntime, torch); "
            "numpy's BLAS on 1 thread",
            f"- RAM: {machine['ram_gib']} GiB; {machine['os']}; Python {machine['python']}",
            "- load average (1, 5, 15 min) when the run ended: "
            + ", ".join(str(x) for x in machine["load_average"]),
            f"- versions: {versions}",
        ]
    )


def command_line() -> str:
    """The command that started this script, as a person would type it again."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):  # a script outside the repo keeps its own path
        script = script.resolve().relative_to(REPO_ROOT)
    return shlex.join(["python", str(script), *sys.argv[1:]])


# ---------------------------------------------------------------- timing and memory


def latency_ms(samples: Sequence[float]) -> dict[str, float]:
    """p50, p95 and mean of latencies given in seconds, in milliseconds."""
    if not samples:
        return {"p50": float("nan"), "p95": float("nan"), "mean": float("nan")}
    array = np.asarray(samples, dtype=np.float64) * 1000.0
    return {
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "mean": float(array.mean()),
    }


class Stopwatch:
    """Wall-clock and CPU time of a stretch of work, started at construction.

    CPU time (user + system of every thread of this process) is reported beside wall time
    because a shared machine's load stretches wall time but barely changes CPU time; a
    speed-up measured on both is one a reader can trust.
    """

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> tuple[float, float]:
        """Seconds elapsed since construction: (wall, CPU)."""
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Resident memory of this process now (ru_maxrss where /proc is missing)."""
    kib = _status_kib("VmRSS")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


@dataclass
class PeakMeter:
    """Measures the resident-memory peak of a stretch of work above its starting point.

    ``start()`` records the RSS and resets the kernel's high-water mark; ``stop()`` returns
    the peak RSS seen since then. ``exact`` is False when the reset was not possible, in
    which case the peak is the process's lifetime maximum (an upper bound).
    """

    base: int = 0
    exact: bool = True

    def start(self) -> None:
        """Record the current RSS and reset the high-water mark to it."""
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.exact = False
        self.base = rss_bytes()

    def peak(self) -> int:
        """Peak RSS in bytes since :meth:`start` (or over the whole process, if not exact)."""
        kib = _status_kib("VmHWM") if self.exact else None
        if kib is None:
            self.exact = False
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kib * 1024

    def report(self) -> dict[str, Any]:
        """Base, peak and their difference in bytes, with whether the peak is exact."""
        peak = self.peak()
        return {
            "base": self.base,
            "peak": peak,
            "above_base": peak - self.base,
            "exact": self.exact,
        }


def file_bytes(path: Path) -> int:
    """Size of a SQLite file with its WAL and shared-memory sidecars, if any."""
    return sum(
        p.stat().st_size
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        if p.exists()
    )


# ---------------------------------------------------------------- subprocess phases


def run_phase(script: Path, phase: str, args: Sequence[str], log_dir: Path) -> dict[str, Any]:
    """Run ``python script --phase PHASE --result FILE args...`` and return its JSON result.

    Each phase gets a fresh interpreter, so its peak memory is its own. Its stderr goes to
    ``log_dir/PHASE.log``; a failing phase raises RuntimeError naming that log.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False, dir=log_dir) as handle:
        result_path = Path(handle.name)
    log_path = log_dir / f"{phase}.log"
    command = [sys.executable, str(script), "--phase", phase, "--result", str(result_path), *args]
    logger.info("phase %s: %s (log %s)", phase, shlex.join(command), log_path)
    started = time.perf_counter()
    with log_path.open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(
            f"phase {phase} failed with exit code {done.returncode}; see {log_path}:\n{tail}"
        )
    result: dict[str, Any] = json.loads(result_path.read_text())
    result_path.unlink()
    logger.info("phase %s done in %.1f s", phase, time.perf_counter() - started)
    return result


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write a phase's result as JSON for :func:`run_phase` to read back."""
    Path(path).write_text(json.dumps(result, default=float))


# ---------------------------------------------------------------- MaxSim, brute force


class PackedVectors:
    """Every document's token vectors in one ``[total_tokens, dim]`` matrix with offsets.

    Brute-force MaxSim then takes one matrix product per query and one
    ``np.maximum.reduceat`` over document boundaries, with no per-document Python loop.
    """

    def __init__(self, docs: Sequence[npt.NDArray[np.float32]], dtype: type = np.float32) -> None:
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        if len(docs) == 0 or (lengths == 0).any():
            raise ValueError("every document needs at least one token vector")
        self.matrix: npt.NDArray[Any] = np.concatenate(docs).astype(dtype, copy=False)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.lengths = lengths

    @property
    def nbytes(self) -> int:
        """Bytes held by the vectors themselves."""
        return int(self.matrix.nbytes)

    def scores(self, query: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """MaxSim of one query ``[q_tokens, dim]`` against every document."""
        sims = self.matrix @ query.astype(self.matrix.dtype, copy=False).T  # [tokens, q]
        best = np.maximum.reduceat(sims, self.starts, axis=0)  # [docs, q]
        scores: npt.NDArray[np.float32] = best.sum(axis=1, dtype=np.float32)
        return scores


def top_k(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """Indices of the k highest scores, best first."""
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def overlap_at_k(a: Sequence[str], b: Sequence[str], k: int = 10) -> float:
    """Share of ``b``'s top k that ``a``'s top k also holds."""
    reference = list(b)[:k]
    if not reference:
        return 1.0
    return len(set(list(a)[:k]) & set(reference)) / len(reference)


def run_header(machine: dict[str, Any]) -> list[str]:
    """The markdown lines that open a results section: the machine and the exact command."""
    return [
        "Machine:",
        "",
        machine_markdown(machine),
        "",
        "Command:",
        "",
        "```",
        command_line(),
        "```",
        "",
    ]
