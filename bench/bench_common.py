"""Shared pieces of the benchmarks: the machine, medians, tables, and a sandbox in its own process.

The sandbox runs in a separate process (``bench/sandbox_server.py``) so that its request handling
does not compete for the benchmark process's GIL; the benchmarks drive it through its HTTP
control plane (``/_sandbox/...``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCOPE = "https://cognitiveservices.azure.com/.default offline_access"


def machine() -> dict[str, Any]:
    """Describe the machine: CPU model, cores, RAM, Python, OS, date, load."""
    cpu = platform.processor() or "unknown"
    ram_gb: float | None = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_1m": round(load[0], 2),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """One line naming the machine."""
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM, Python {info['python']}, "
        f"{info['os']}, {info['date']} (1-min load {info['load_avg_1m']})"
    )


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt_time(seconds: float) -> str:
    """Seconds as ns / µs / ms / s with three significant digits."""
    for unit, scale in (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3)):
        if seconds < 1000 * scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


def fmt_ratio(value: float) -> str:
    return f"{value:.3g}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Result:
    """One benchmark's table, as printed and as written to results.md."""

    name: str
    """Short identifier (``cache_hit``, ``stampede``, ...)."""
    title: str
    """Section heading."""
    headers: list[str]
    """Column names."""
    rows: list[list[Any]]
    """Table rows (already formatted)."""
    goal: str = ""
    """The goal, in words ("" when there is none)."""
    met: bool | None = None
    """Whether the goal was met (None: no goal)."""
    notes: list[str] = field(default_factory=list)
    """Method and caveats, one sentence each."""
    figures: dict[str, Any] = field(default_factory=dict)
    """Raw numbers (for the README section)."""

    def markdown(self) -> str:
        parts = [f"### {self.title}", "", table(self.headers, self.rows), ""]
        if self.goal:
            verdict = {True: "met", False: "**not met**", None: "n/a"}[self.met]
            parts += [f"Goal: {self.goal} — {verdict}.", ""]
        parts += [f"- {note}" for note in self.notes]
        return "\n".join(parts).rstrip() + "\n"


class SandboxProcess:
    """``bench/sandbox_server.py`` in a subprocess; its addresses and its control plane.

    Args:
        **options: Keyword arguments of :class:`saga_magic.sandbox.Sandbox`.
    """

    def __init__(self, **options: Any) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(HERE / "sandbox_server.py"), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        info = json.loads(self._proc.stdout.readline())
        self.base_url: str = info["base_url"]
        self.tenant_id: str = info["tenant_id"]
        self.client_id: str = info["client_id"]
        self.chat_endpoint: str = info["chat_endpoint"]
        self.api_version: str = info["api_version"]
        self._http = httpx.Client(base_url=self.base_url, timeout=30.0)

    def control(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, f"/_sandbox/{path}", json=payload)
        response.raise_for_status()
        return response.json()

    def issue_tokens(self, user: str) -> dict[str, Any]:
        body: dict[str, Any] = self.control("POST", "entra/issue_tokens", {"user": user})
        return body

    def strict_rotation(self, enabled: bool) -> None:
        self.control("POST", "entra/rt_reuse_strict", {"enabled": enabled})

    def token_posts(self) -> int:
        return int(self.control("GET", "stats")["post_counts"]["token"])

    def token_statuses(self) -> list[int]:
        requests = self.control("GET", "requests?endpoint=token")["requests"]
        return [int(r["status"] or 0) for r in requests]

    def reset(self) -> None:
        self.control("POST", "reset")

    def close(self) -> None:
        self._http.close()
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Workers:
    """Processes of ``bench/bench_workers.py`` started together, released together."""

    def __init__(self, count: int, mode: str, args: dict[str, Any]) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(HERE / "bench_workers.py"), mode, json.dumps(args)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        for proc in self.procs:  # each says "ready" once its imports and set-up are done
            assert proc.stdout is not None
            json.loads(proc.stdout.readline())

    def run(self, delay: float = 0.5) -> list[dict[str, Any]]:
        """Release every worker at the same instant; return their results."""
        start_at = dt.datetime.now(dt.UTC).timestamp() + delay
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"start_at": start_at}) + "\n")
            proc.stdin.close()
        results = []
        for proc in self.procs:
            assert proc.stdout is not None
            results.append(json.loads(proc.stdout.readline()))
            proc.stdout.close()
            proc.wait(60)
        return results


def repeat(count: int, fn: Callable[[], float]) -> list[float]:
    return [fn() for _ in range(count)]


# -- MSAL against the sandbox, without network ----------------------------------------------------

PUBLIC_HOST = "https://login.microsoftonline.com"


def msal_session(base_url: str) -> Any:
    """A ``requests.Session`` for MSAL that maps the public Entra host onto the sandbox.

    MSAL accepts only ``https`` authorities and token endpoints; the sandbox speaks plain http
    on loopback. Requests to ``https://login.microsoftonline.com`` go to the sandbox instead,
    discovery documents are rewritten to name the public host, and any other address is
    refused: MSAL never reaches the network.
    """
    import requests

    class LoopbackSession(requests.Session):
        def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            url = str(url).replace(PUBLIC_HOST, base_url, 1)
            if not url.startswith(base_url):
                raise RuntimeError(f"network access refused in the benchmark: {url}")
            response = super().request(method, url, *args, **kwargs)
            if "well-known" in url or "/discovery/" in url:
                response._content = response.content.replace(
                    base_url.encode(), PUBLIC_HOST.encode()
                )
            return response

    return LoopbackSession()


def msal_app(base_url: str, tenant_id: str, client_id: str, cache: Any) -> tuple[Any, Any]:
    """A PublicClientApplication on the sandbox (no instance discovery); returns it and its
    HTTP session (close it when done)."""
    import msal

    session = msal_session(base_url)
    app = msal.PublicClientApplication(
        client_id,
        authority=f"{PUBLIC_HOST}/{tenant_id}",
        token_cache=cache,
        instance_discovery=False,
        http_client=session,
    )
    return app, session
