"""The benchmark's results: collected over the run, judged against DESIGN.md's and the issue's
targets, and written as a Markdown table (results.md), JSON (results.json) and a chart of latency
per page (latency.png). The targets are read from the results, never asserted as timings."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.benchmarks.pages import PROPOSAL_LIST, Missing

#: The targets (issue: "read from the benchmark, never asserted as timings").
MEDIAN_MS = 50.0
STATEMENTS = 12
RPS_SHARE = 0.5  # the proposal list's requests per second, as a share of the floor's
RSS_MIB = 80.0
IMPORT_RATE = 50_000.0  # usage records (jobs) per second
#: Where the targets hold (elsewhere the figures are shown, and misses listed, for comparison).
TARGET_SETTING = "scale 1 on SQLite, one worker, on a 2-core machine"


@dataclass
class PageResult:
    visitor: str
    page: str
    path: str
    status: int
    bytes: int
    statements: int | None
    statements_max: int | None
    median_ms: float
    p95_ms: float
    ratio: float | None = None  # median over the floor's median

    @property
    def faults(self) -> list[str]:
        """What misses a target ("" when all are met)."""
        found = []
        if self.status != 200:
            found.append(f"answered {self.status}")
        if self.median_ms >= MEDIAN_MS:
            found.append(f"median {self.median_ms:.1f} ms (target < {MEDIAN_MS:.0f} ms)")
        if self.statements is None or self.statements > STATEMENTS:
            found.append(f"{self.statements} SQL statements (target ≤ {STATEMENTS})")
        return found


@dataclass
class RateResult:
    """A throughput run, and the workers' memory after it."""

    server: str  # "portal" or "floor"
    path: str
    workers: int
    clients: int
    seconds: float
    requests: int
    errors: int
    rps: float
    rps_per_worker: float
    rss_max_mib: float
    rss_mean_mib: float
    share_of_floor: float | None = None  # the portal's rps over the floor's, same workers


@dataclass
class ImportResult:
    how: str  # "file" (flask usage import) or "api" (POST /api/v1/usage)
    run: str  # "new" or "again" (the same jobs a second time: nothing new, nothing charged)
    jobs: int
    seconds: float
    jobs_per_s: float
    lines: int | None = None
    lines_per_s: float | None = None
    requests: int | None = None
    summary: str = ""


@dataclass
class Results:
    settings: dict[str, Any]
    started_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )
    machine: dict[str, Any] = field(default_factory=dict)
    database: dict[str, Any] = field(default_factory=dict)
    data: dict[str, int] = field(default_factory=dict)
    floor: dict[str, Any] = field(default_factory=dict)
    pages: list[PageResult] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    throughput: list[RateResult] = field(default_factory=list)
    imports: list[ImportResult] = field(default_factory=list)
    delivery: dict[str, Any] = field(default_factory=dict)

    def misses(self) -> list[str]:
        """Every target missed, in words."""
        found = [f"{p.page} as {p.visitor}: {'; '.join(p.faults)}" for p in self.pages if p.faults]
        for r in self.throughput:
            if (
                r.server == "portal"
                and r.share_of_floor is not None
                and r.share_of_floor < RPS_SHARE
            ):
                found.append(
                    f"{r.path} at {r.workers} worker(s): {r.share_of_floor:.0%} of the floor's "
                    f"requests per second (target ≥ {RPS_SHARE:.0%})"
                )
            if r.server == "portal" and r.rss_max_mib > RSS_MIB:
                found.append(
                    f"RSS per worker at {r.workers} worker(s): up to {r.rss_max_mib:.0f} MiB "
                    f"(target ≤ {RSS_MIB:.0f} MiB)"
                )
        for i in self.imports:
            if i.jobs_per_s < IMPORT_RATE:
                found.append(
                    f"usage import ({i.how}, {i.run}): {i.jobs_per_s:,.0f} records/s "
                    f"(target ≥ {IMPORT_RATE:,.0f})"
                )
        return found

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = {
            "median_ms_below": MEDIAN_MS,
            "statements_at_most": STATEMENTS,
            "rps_share_of_floor_at_least": RPS_SHARE,
            "rss_mib_per_worker_at_most": RSS_MIB,
            "usage_records_per_second_at_least": IMPORT_RATE,
            "where": TARGET_SETTING,
        }
        out["misses"] = self.misses()
        return out

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(
            json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (folder / "results.md").write_text(markdown(self), encoding="utf-8")
        if self.pages:
            chart(self, folder / "latency.png")


def machine() -> dict[str, Any]:
    """Cores, processor, memory, operating system and Python of this machine."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    return {
        "load_start": load_average(),
        "cores": os.cpu_count(),
        "processor": model or platform.processor(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "system": platform.platform(),
        "python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "flask": version("flask"),
        "sqlalchemy": version("sqlalchemy"),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _load(values: list[float] | None) -> str:
    return ", ".join(f"{x:.2f}" for x in values) if values else "?"


def _ms(value: float) -> str:
    return f"{value:.1f}"


def markdown(r: Results) -> str:
    s = r.settings
    db = r.database
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {r.started_at}; do not edit by hand. Scale {s['scale']:g} "
        f"(seed {s['seed']}) on {db.get('version', '?')}; {s['rounds']} timed requests per page "
        f"after 2 warm-up requests, each on a new connection; throughput runs of "
        f"{s['seconds']:g} s. The targets hold for {TARGET_SETTING}.",
        "",
    ]
    if r.pages:
        f = r.floor
        lines += [
            "## Pages (one gunicorn worker)",
            "",
            f"The floor — a bare Flask route serving a static page of {f['bytes']:,} bytes (the "
            f"size of the officer's proposal list, `{PROPOSAL_LIST[1]}`) under the same gunicorn "
            "— answers in a median of "
            f"{_ms(f['median_ms'])} ms (p95 {_ms(f['p95_ms'])} ms). Public pages are measured "
            "with the public page cache off (`PUBLIC_CACHE_SECONDS=0`), so each one is rendered.",
            "",
            "| Page | Visitor | Median ms | p95 ms | Ratio to floor | SQL | Bytes | Target met? |",
            "|---|---|--:|--:|--:|--:|--:|---|",
        ]
        for p in r.pages:
            sql = "—" if p.statements is None else str(p.statements)
            if p.statements_max is not None and p.statements_max != p.statements:
                sql += f" ({p.statements_max})"
            ratio = "" if p.ratio is None else f"{p.ratio:.1f}"
            met = "yes" if not p.faults else "**no**: " + "; ".join(p.faults)
            lines.append(
                f"| `{p.page}` | {p.visitor} | {_ms(p.median_ms)} | {_ms(p.p95_ms)} | {ratio} "
                f"| {sql} | {p.bytes:,} | {met} |"
            )
        lines += [
            "",
            "SQL: the statements most requests ran (in brackets, the most any ran: a login "
            "session is marked seen at most once a minute, a write of its own).",
            "",
        ]
    if r.missing:
        lines += ["Not measured (not found in this data):", ""]
        lines += [f"- `{m.label}` as {m.visitor}: {m.reason}" for m in r.missing]
        lines.append("")
    if r.throughput:
        lines += [
            "## Throughput and memory",
            "",
            f"The program officer's proposal list (`{PROPOSAL_LIST[1]}`, of the first call the "
            "officer's list of calls links to) against the floor. Client processes send requests one after the other (a "
            "new connection each) for the run's length, after 2 s of the same load that are not "
            "counted; requests per second answered 200. RSS: resident memory of each gunicorn "
            "worker (not the master) after the run.",
            "",
            "| Server | Path | Workers | Clients | Requests/s | Per worker | % of floor | Errors "
            "| RSS max MiB | RSS mean MiB |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for t in r.throughput:
            share = "" if t.share_of_floor is None else f"{t.share_of_floor:.0%}"
            lines.append(
                f"| {t.server} | `{t.path}` | {t.workers} | {t.clients} | {t.rps:,.0f} "
                f"| {t.rps_per_worker:,.0f} | {share} | {t.errors} | {t.rss_max_mib:.0f} "
                f"| {t.rss_mean_mib:.0f} |"
            )
        lines.append("")
    if r.imports:
        lines += [
            "## Usage import",
            "",
            "On a copy of the scale database: a generated `sacct --parsable2` file (each job "
            "with its `.batch` and `.0` steps; 5 % without GPUs, 2 % of unknown accounts) through "
            "`flask --app portal usage import` (run in the bench's process: start-up not "
            "counted), and as many other jobs pushed to `POST /api/v1/usage` under gunicorn "
            "(one worker) in batches of its largest size. Each a second time, which must find "
            "every job unchanged and charge nothing (checked: a correctness check, not a "
            "timing). Records/s: the jobs given (steps not counted) per second.",
            "",
            "| How | Run | Jobs | Lines | Seconds | Records/s | Lines/s | Result |",
            "|---|---|--:|--:|--:|--:|--:|---|",
        ]
        for i in r.imports:
            lines.append(
                f"| {i.how} | {i.run} | {i.jobs:,} | {'' if i.lines is None else f'{i.lines:,}'} "
                f"| {i.seconds:.2f} | {i.jobs_per_s:,.0f} "
                f"| {'' if i.lines_per_s is None else f'{i.lines_per_s:,.0f}'} | {i.summary} |"
            )
        lines.append("")
    if r.delivery:
        d = r.delivery
        lines += [
            "## Mail delivery",
            "",
            f"The outbox worker delivered {d['mails']:,} mails to a local SMTP server in "
            f"{d['seconds']:.2f} s ({d['per_second']:,.0f}/s).",
            "",
        ]
    if r.data:
        lines += ["## Data", "", "| Rows | Count |", "|---|--:|"]
        lines += [f"| {k} | {v:,} |" for k, v in r.data.items()]
        generated = db.get("generated_seconds")
        lines += [
            "",
            (
                f"Generated in {generated:.0f} s by `flask --app portal demo generate`."
                if generated is not None
                else "Reused from an earlier run (same scale, seed, migrations and generator)."
            ),
            "",
        ]
    m = r.machine
    if m:
        lines += [
            "## Machine",
            "",
            f"{m['cores']} cores ({m['processor']}), {m['memory_gib']} GiB, {m['system']}; "
            f"Python {m['python']}, gunicorn {m['gunicorn']}, Flask {m['flask']}, "
            f"SQLAlchemy {m['sqlalchemy']}; {db.get('version', '?')}. Load average (1, 5, 15 "
            f"min) at the start {_load(m.get('load_start'))}, at the end {_load(m.get('load_end'))} "
            "(the machine may be shared: a load above its cores slows every figure). Settings: "
            + ", ".join(f"{k}={v}" for k, v in s.items())
            + ".",
            "",
        ]
    misses = r.misses()
    lines += ["## Targets missed", ""]
    lines += [f"- {miss}" for miss in misses] if misses else ["None."]
    return "\n".join(lines) + "\n"


def chart(r: Results, path: Path) -> None:
    """Horizontal bars: each page's median, its p95 as a whisker; lines at the target and at
    the floor's median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pages = list(reversed(r.pages))  # the first page at the top
    labels = [f"{p.page}  ({p.visitor})" for p in pages]
    medians = [p.median_ms for p in pages]
    whiskers = [[0.0] * len(pages), [max(0.0, p.p95_ms - p.median_ms) for p in pages]]
    colours = ["#c0392b" if p.faults else "#2e86c1" for p in pages]
    figure, axes = plt.subplots(figsize=(10, 1.2 + 0.26 * len(pages)))
    axes.barh(labels, medians, xerr=whiskers, color=colours, ecolor="#555555", capsize=2)
    axes.axvline(MEDIAN_MS, color="#c0392b", linestyle="--", label=f"target: {MEDIAN_MS:.0f} ms")
    if r.floor:
        axes.axvline(
            r.floor["median_ms"],
            color="#27ae60",
            linestyle=":",
            label=f"floor: {r.floor['median_ms']:.1f} ms",
        )
    axes.set_title(
        "Median latency per page (bars) and p95 (whiskers); red: a target missed\n"
        f"scale {r.settings['scale']:g}, {r.database.get('version', '')}, one gunicorn worker",
        fontsize=10,
    )
    axes.set_xlabel("ms")
    axes.tick_params(axis="y", labelsize=8)
    axes.legend(loc="lower right")
    axes.margins(y=0.01)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
