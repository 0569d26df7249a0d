"""Where the machine's CPU went during one repetition: ours, the servers', everyone else's.

On a machine of few cores the subjects share, a ratio moves with whatever else runs: a
subject that needs two busy cores (quotad's client and Redis's Lua, say) loses more to a
neighbour than one that needs one. So every repetition records, from ``/proc`` (Linux;
elsewhere nothing is recorded):

- ``wall_s``: the repetition's wall time;
- ``self_s``: this process's CPU time (the in-process subjects run here);
- ``children_s``: CPU time of child processes that ended meanwhile (wrk, redis-benchmark);
- one entry per watched process (``redis-server``, the HTTP server under load), and per
  watched process name (``postgres``: every backend, including those started meanwhile),
  ``<name>_s``;
- ``busy_s``: every core's busy time, machine-wide; ``steal_s``: time the hypervisor gave
  to other guests; ``cores``: the cores there are;
- ``others_s``: busy time that none of the above accounts for: other programs on the
  machine (another test suite, a build), the contention the figure was measured under;
- ``load1``: the one-minute load average at the end;
- ``cpu_pressure``, ``io_pressure``: the share of the time some runnable task waited for a
  core, or for the disk (Linux pressure stall information, 0 to 1; ours included);
- ``disk_flushes``, ``disk_busy_s``: cache flushes the disks completed (fsyncs, roughly)
  and the time they were busy: a commit waits longer for its fsync on a busy disk.

CPU time per operation (``self_s`` over the operations, say) is the figure that does not
move with contention; throughput does.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine() -> tuple[float, float] | None:
    """Busy and steal seconds over all cores since boot, or ``None`` off Linux."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in first[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


def _pressure(kind: str) -> float | None:
    """Microseconds some task has stalled on ``kind`` (cpu, io) since boot, or ``None``."""
    try:
        first = Path(f"/proc/pressure/{kind}").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return float(first.rsplit("total=", 1)[1]) / 1e6


def _disks() -> tuple[float, float] | None:
    """Flushes completed and seconds busy, summed over the whole disks, or ``None``."""
    try:
        lines = Path("/proc/diskstats").read_text().splitlines()
    except OSError:
        return None
    flushes = busy = 0.0
    for line in lines:
        fields = line.split()
        name = fields[2]
        if name.startswith(("loop", "ram", "zram")) or not Path(f"/sys/block/{name}").exists():
            continue  # a partition (counted in its disk) or no disk at all
        busy += int(fields[12]) / 1000
        if len(fields) >= 20:  # flushes are reported since Linux 5.5
            flushes += int(fields[19])
    return flushes, busy


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def named_seconds(name: str) -> dict[int, float]:
    """CPU seconds of every process whose command name is ``name``, by pid."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != name:
                continue
        except OSError:
            continue
        seconds = process_seconds(int(entry.name))
        if seconds is not None:
            found[int(entry.name)] = seconds
    return found


def _system() -> dict[str, float | None]:
    disks = _disks()
    return {
        "cpu_pressure": _pressure("cpu"),
        "io_pressure": _pressure("io"),
        "disk_flushes": None if disks is None else disks[0],
        "disk_busy_s": None if disks is None else disks[1],
    }


def _self_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuProbe:
    """Snapshots at ``start`` and ``stop``; ``stop`` answers the differences (see module)."""

    watched: dict[str, int] = field(default_factory=dict)  # name -> pid
    names: tuple[str, ...] = ()  # process names whose processes are summed
    _began: dict[str, float | None] = field(default_factory=dict)
    _named: dict[str, dict[int, float]] = field(default_factory=dict)
    _system: dict[str, float | None] = field(default_factory=dict)

    def start(self) -> CpuProbe:
        """Take the first snapshot."""
        machine = _machine()
        self._system = _system()
        self._began = {
            "wall": perf_counter(),
            "self": _self_seconds(),
            "children": _children_seconds(),
            "busy": None if machine is None else machine[0],
            "steal": None if machine is None else machine[1],
            **{name: process_seconds(pid) for name, pid in self.watched.items()},
        }
        self._named = {name: named_seconds(name) for name in self.names}
        return self

    def stop(self) -> dict[str, Any]:
        """The second snapshot, as differences from the first (rounded to 10 ms)."""
        machine = _machine()
        system = _system()
        now: dict[str, float | None] = {
            "wall": perf_counter(),
            "self": _self_seconds(),
            "children": _children_seconds(),
            "busy": None if machine is None else machine[0],
            "steal": None if machine is None else machine[1],
            **{name: process_seconds(pid) for name, pid in self.watched.items()},
        }
        spent: dict[str, float] = {}
        for name, value in now.items():
            before = self._began.get(name)
            if value is not None and before is not None:
                spent[name] = value - before
        for name, began in self._named.items():
            # A process started meanwhile counts from zero; one that ended is not seen.
            ended = named_seconds(name)
            spent[name] = sum(seconds - began.get(pid, 0.0) for pid, seconds in ended.items())
        result: dict[str, Any] = {f"{name}_s": round(v, 2) for name, v in spent.items()}
        if "busy" in spent:
            ours = sum(v for k, v in spent.items() if k not in ("wall", "busy", "steal"))
            result["others_s"] = round(max(0.0, spent["busy"] - ours), 2)
        wall = spent["wall"]
        for name, value in system.items():
            before = self._system.get(name)
            if value is None or before is None:
                continue
            change = value - before
            if name.endswith("_pressure"):
                result[name] = round(min(1.0, change / wall), 2) if wall > 0 else None
            elif name == "disk_flushes":
                result[name] = int(change)
            else:
                result[name] = round(change, 2)
        result["cores"] = os.cpu_count()
        if hasattr(os, "getloadavg"):
            result["load1"] = round(os.getloadavg()[0], 2)
        return result


def redis_server_pid(redis_url: str) -> int | None:
    """The pid of the Redis at ``redis_url`` when it runs on this machine, else ``None``."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        pid = int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None
    finally:
        client.close()
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None  # another machine's (or another namespace's) pid
    return pid if name.startswith("redis") else None


def describe(cpu: dict[str, Any]) -> str:
    """One short line for the progress log: the cores each party kept busy."""
    wall = cpu.get("wall_s")
    if not wall:
        return ""
    parts = [
        f"{name.removesuffix('_s')} {value / wall:.2f}"
        for name, value in cpu.items()
        if name.endswith("_s") and name not in ("wall_s", "busy_s") and value
    ]
    load = f", load {cpu['load1']}" if "load1" in cpu else ""
    if cpu.get("cpu_pressure") is not None:
        load += f", cpu pressure {cpu['cpu_pressure']:.2f}"
    return f" [cores busy: {', '.join(parts)}{load}]"
