"""Sends thousands of hostile requests to every RPC of a real local mesh and
checks that no service dies, every answer carries a documented status code
with a short message, and the ps stays within its memory bound."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2

from hostile_mesh import (CLIENT_OPTIONS, PS_MEMORY_BUDGET_MIB, RSS_ALLOWANCE_MIB, RSS_SAFETY_CAP_MIB, SUMMARY_KEY, Mesh,
                          MeshFactory, Service, Settings)
from hostile_requests import Case, HostileGenerator, select_rpcs

S = grpc.StatusCode
ALLOWED = {S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.ALREADY_EXISTS, S.PERMISSION_DENIED, S.RESOURCE_EXHAUSTED,
           S.FAILED_PRECONDITION, S.ABORTED, S.OUT_OF_RANGE, S.UNIMPLEMENTED, S.UNAUTHENTICATED, S.CANCELLED,
           S.DEADLINE_EXCEEDED, S.UNAVAILABLE}  # UNAVAILABLE: see judge()
MAX_DETAILS = 4096
SMALL_REQUEST = 4 << 20  # a status "too large" on a request under this is the answer's fault
STREAM_MESSAGES = 3  # a Train stream is cancelled after this many progress messages
HEALTH_EVERY = 1000  # requests between health checks during the run
REPLAY_CANDIDATES = 60  # requests sent just before a death, replayed alone to find the one that kills
REPLAY_SECONDS = 60
GROWTH_MIB = 64  # a replayed request that grows a service by more is reported with a memory death
ALLOCATING = ("Register", "LoadStage", "Train")  # the RPCs that can make the ps keep memory


@dataclass
class Outcome:
    """The answer to one case."""

    case: Case  # without its body
    code: grpc.StatusCode
    details: str  # the first 1000 characters
    details_size: int  # bytes of the whole status message
    seconds: float
    sent_at: float


@dataclass
class Failure:
    """A broken promise: the RPC, the input, what came back."""

    rpc: str
    index: int
    input: str
    code: str
    problem: str  # what is wrong, in a few words (the grouping key)
    details: str

    def line(self) -> str:
        return f"#{self.index} {self.rpc} [{self.input[:120]}] -> {self.code}: {self.details[:200]!r}"


@dataclass
class Death:
    """A service that exited during the run, and the request that killed it."""

    service: Service
    detected_after: int  # requests sent when it was seen
    candidates: list[Case]
    culprit: Case | None = None  # the request after which a fresh mesh died too
    alone: bool = False  # it kills a fresh mesh by itself
    sequence: list[int] = field(default_factory=list)  # the replayed indices that killed a fresh mesh, in order
    growth: list[tuple[float, Case]] = field(default_factory=list)  # (MiB, case): growth of the service on replay
    culprit_note: str = ""


@dataclass
class RunResult:
    sent: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    death: Death | None = None
    timed_out: bool = False
    seconds: float = 0.0


class Caller:
    """Sends raw request bytes with a deadline, one channel per endpoint."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.channels: dict[str, grpc.Channel] = {}
        self.lock = threading.Lock()

    def channel(self, endpoint: str) -> grpc.Channel:
        with self.lock:
            if endpoint not in self.channels:
                self.channels[endpoint] = grpc.insecure_channel(endpoint, options=CLIENT_OPTIONS)
            return self.channels[endpoint]

    def send(self, case: Case, pb: SimpleNamespace, protected: str) -> Outcome:
        """Sends one case; a Train stream is read briefly, cancelled, and its job cancelled."""
        started = time.monotonic()
        channel = self.channel(case.endpoint)
        code, details = S.OK, ""
        try:
            if case.rpc.client_streaming:
                channel.stream_unary(case.rpc.path)(iter((case.body, *case.rest)), timeout=self.deadline)
            elif case.rpc.streaming:
                stream = channel.unary_stream(case.rpc.path)(case.body, timeout=self.deadline)
                for count, _ in enumerate(stream, 1):
                    if count >= STREAM_MESSAGES:
                        stream.cancel()
                        break
            else:
                channel.unary_unary(case.rpc.path)(case.body, timeout=self.deadline)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
        if case.train_job is not None:
            self.cancel_jobs(case.endpoint, pb, protected)
        return Outcome(case.without_body(), code, details[:1000], len(details.encode()), time.monotonic() - started, started)

    def cancel_jobs(self, coordinator: str, pb: SimpleNamespace, protected: str) -> None:
        """Cancels every running job but the protected one, so hostile Train calls do not pile up."""
        channel = self.channel(coordinator)
        c = pb.coordinator
        try:
            # ListJobs answers a page (100 by default): ask for the running ones, every page.
            jobs, token = [], ""
            for _ in range(100):
                page = c.ListJobsResponse.FromString(channel.unary_unary("/pipemesh.v1.Coordinator/ListJobs")(
                    c.ListJobsRequest(state=c.JOB_STATE_RUNNING, page_size=1000, page_token=token).SerializeToString(), timeout=5))
                jobs += page.jobs
                token = page.next_page_token
                if not token:
                    break
            for job in jobs:
                if job.state == pb.coordinator.JOB_STATE_RUNNING and job.job != protected:
                    channel.unary_unary("/pipemesh.v1.Coordinator/CancelJob")(
                        pb.coordinator.CancelJobRequest(job=job.job).SerializeToString(), timeout=10)
        except grpc.RpcError:
            pass  # the cancelled calls are checked as hostile requests of their own

    def health(self, endpoint: str) -> str:
        """'SERVING', or what went wrong."""
        try:
            answer = self.channel(endpoint).unary_unary("/grpc.health.v1.Health/Check")(
                health_pb2.HealthCheckRequest().SerializeToString(), timeout=10)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(health_pb2.HealthCheckResponse.FromString(answer).status)
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def judge(outcome: Outcome) -> str | None:
    """Why an answer breaks the contract, or None when it keeps it."""
    code, details = outcome.code, outcome.details
    # A live service answers UNAVAILABLE only for a peer that does not answer
    # (one a request named, or the pool's partitions a model needs), and names it.
    if code == S.UNAVAILABLE and not details.startswith(("the ps at ", "the partition at ", "the partitions at ")):
        return "UNAVAILABLE from a live service"
    if code not in ALLOWED:
        return f"status {code.name} is not in the documented set"
    if outcome.details_size > MAX_DETAILS:
        return f"status message over {MAX_DETAILS} bytes"
    lowered = details.lower()
    if code == S.RESOURCE_EXHAUSTED and outcome.case.size < SMALL_REQUEST and (
            "metadata" in lowered or "message larger than max" in lowered):
        return "status message too large to deliver (the transport's RESOURCE_EXHAUSTED)"
    return None


class HostileRun:
    """Sends the cases concurrently, stops at the first death or the time bound."""

    def __init__(self, mesh: Mesh, pb: SimpleNamespace, settings: Settings) -> None:
        assert mesh.context is not None
        self.mesh = mesh
        self.pb = pb
        self.settings = settings
        self.generator = HostileGenerator(pb, mesh.context, settings.seed, select_rpcs(settings.rpcs))
        self.caller = Caller(settings.deadline)
        self.result = RunResult()
        self.inflight: dict[Future, Case] = {}
        self.recent: list[tuple[float, Case, float]] = []  # (sent at, case, ps VmRSS then)
        self.ps_over_budget = False

    def indices(self) -> list[int]:
        return list(self.settings.only) if self.settings.only else list(range(self.settings.requests))

    def execute(self) -> RunResult:
        started = time.monotonic()
        result = self.result
        concurrency = 1 if self.settings.only else self.settings.concurrency
        with ThreadPoolExecutor(concurrency, thread_name_prefix="hostile") as pool:
            for index in self.indices():
                if time.monotonic() - started > self.settings.seconds:
                    result.timed_out = True
                    break
                while len(self.inflight) >= concurrency and not result.death:
                    self.collect(wait(self.inflight, timeout=0.5, return_when=FIRST_COMPLETED).done)
                if result.death:
                    break
                case = self.generator.case(index)
                self.inflight[pool.submit(self.caller.send, case, self.pb, self.mesh.context.trained_job)] = case
                self.recent.append((time.monotonic(), case.without_body(), self.mesh.ps.rss_now_mib))
                result.sent += 1
                if result.sent % HEALTH_EVERY == 0:
                    self.check_health()
                if self.settings.only:
                    self.collect(wait(self.inflight).done)
                    time.sleep(0.3)  # a crash takes a moment to show
                    self.check_deaths()
            while self.inflight:
                self.collect(wait(self.inflight, timeout=1, return_when=FIRST_COMPLETED).done)
        self.check_deaths()
        if not result.death:
            self.caller.cancel_jobs(self.mesh.context.coordinator, self.pb, self.mesh.context.trained_job)
            self.check_health()
        result.seconds = time.monotonic() - started
        self.caller.close()
        return result

    def collect(self, done: set[Future]) -> None:
        """Judges finished calls; answers after a death are its echo, not news."""
        for future in done:
            case = self.inflight.pop(future)
            outcome = future.result()
            self.result.outcomes.append(outcome)
            if outcome.code == S.UNAVAILABLE and not self.result.death:
                time.sleep(0.3)  # is the process dying?
            self.check_deaths()
            problem = None if self.result.death else judge(outcome)
            if problem:
                size = f"{outcome.details_size} bytes: " if outcome.details_size > MAX_DETAILS else ""
                self.result.failures.append(Failure(case.rpc.name, case.index, case.description, outcome.code.name, problem,
                                                    size + outcome.details))
        self.check_deaths()
        self.check_memory()

    def check_deaths(self) -> None:
        if self.result.death:
            return
        dead = self.mesh.dead()
        if not dead:
            return
        now = time.monotonic()
        first = dead[0]
        # the calls sent just before, to the dead service first, latest first
        candidates = [case for at, case, _ in self.recent if now - at < self.settings.deadline + 3]
        candidates.sort(key=lambda c: (c.endpoint != first.endpoint, -c.index))
        if self.settings.only:  # replay what was sent, in order
            candidates = [case for _, case, _ in self.recent]
        elif first.killed_for_memory:  # memory grows over many requests: those it grew after, then the last ones
            candidates = list({c.index: c for c in self.growth_suspects(REPLAY_CANDIDATES) + candidates}.values())
        self.result.death = Death(first, self.result.sent, candidates[:REPLAY_CANDIDATES])
        self.recent.clear()

    def growth_suspects(self, count: int) -> list[Case]:
        """The `count` requests most likely to have grown the ps, in send order:
        those that can allocate, ranked by how much the ps grew within a
        deadline (+1 s) after they were sent."""
        window = self.settings.deadline + 1
        recent = self.recent
        rise = [0.0] * len(recent)  # growth over the window that ends at each send
        first = 0
        for j, (at, _, rss) in enumerate(recent):
            while recent[first][0] < at - window:
                first += 1
            rise[j] = rss - min(r for _, _, r in recent[first:j + 1])
        ranked: list[tuple[float, int]] = []
        end = 0
        for i, (at, case, _) in enumerate(recent):
            while end + 1 < len(recent) and recent[end + 1][0] <= at + window:
                end += 1
            growth = max(rise[i:end + 1], default=0.0)
            if case.rpc.method in ALLOCATING and growth > GROWTH_MIB:
                ranked.append((growth, i))
        top = sorted(ranked, reverse=True)[:count]
        return [recent[i][1] for _, i in sorted(top, key=lambda g: g[1])]

    def check_memory(self) -> None:
        if len(self.recent) > 12000:  # a minute or more of requests
            self.recent = self.recent[-6000:]
        ps = self.mesh.ps
        bound = self.settings.ps_rss_bound_mib
        if ps.peak_rss_mib > bound and not self.ps_over_budget:
            self.ps_over_budget = True
            suspects = ", ".join(f"#{c.index} {c.rpc.name} [{c.description[:80]}]" for c in self.growth_suspects(5))
            self.result.failures.append(Failure("ParameterServer (memory)", self.result.sent, "resident memory sampled during the run",
                                                "-", "ps memory over its bound", f"ps VmRSS reached {ps.peak_rss_mib:.0f} MiB, over {bound} MiB "
                                                     f"(budget {PS_MEMORY_BUDGET_MIB} + {RSS_ALLOWANCE_MIB}); sent before it grew: {suspects or '?'}"))

    def check_health(self) -> None:
        for service in self.mesh.services:
            if service.alive:
                status = self.caller.health(service.endpoint)
                if status != "SERVING":
                    self.result.failures.append(Failure(f"{service.name} health", self.result.sent, "grpc.health.v1 Check", status,
                                                        "not SERVING", ""))


def replay(factory: MeshFactory, pb: SimpleNamespace, settings: Settings, cases: list[Case], watch: str,
           budget: float = REPLAY_SECONDS) -> tuple[int | None, Service | None, list[tuple[float, Case]]]:
    """Replays `cases` one at a time against a fresh mesh: the position of the
    first after which a service is dead and that service (or None, None), and
    how much each replayed request grew the `watch` service's memory."""
    mesh = factory.start()
    caller = Caller(settings.deadline)
    growth: list[tuple[float, Case]] = []
    try:
        generator = HostileGenerator(pb, mesh.context, settings.seed, select_rpcs(settings.rpcs))
        watched = mesh.service(watch)
        started = time.monotonic()
        for position, case in enumerate(cases):
            if time.monotonic() - started > budget:
                break
            before = watched.mark()
            caller.send(generator.case(case.index), pb, mesh.context.trained_job)
            time.sleep(0.3)  # a crash takes a moment to show
            growth.append((watched.window_peak_mib - before, case))
            dead = mesh.dead()
            if dead:
                return position, dead[0], growth
        return None, None, growth
    finally:
        caller.close()
        mesh.stop()


def find_culprit(factory: MeshFactory, pb: SimpleNamespace, settings: Settings, death: Death) -> None:
    """Replays the requests sent just before the death against a fresh mesh
    until a service dies, then checks whether that last request kills alone."""
    position, dead, growth = replay(factory, pb, settings, death.candidates, death.service.name)
    death.growth = sorted((g for g in growth if g[0] > GROWTH_MIB), key=lambda g: -g[0])
    if position is None or dead is None:
        death.culprit_note = (f"replaying {len(growth)} of the {len(death.candidates)} requests sent before it, one at a time "
                              f"(at most {REPLAY_SECONDS} s), killed no fresh mesh")
        return
    death.culprit = death.candidates[position]
    death.sequence = [c.index for c in death.candidates[:position + 1]]
    death.alone = position == 0 or replay(factory, pb, settings, [death.culprit], death.service.name)[0] is not None
    how = "alone" if death.alone else f"after {position} other replayed requests (#{', #'.join(map(str, death.sequence[:-1]))})"
    death.culprit_note = f"{how}, on a fresh mesh it made {dead.name} {dead.exit_description()}"
    excerpt = "" if dead.killed_for_memory else dead.stderr_excerpt()
    if excerpt:
        death.culprit_note += "\n      " + excerpt.replace("\n", "\n      ")


def report(result: RunResult, mesh: Mesh, settings: Settings) -> str:
    """The summary: a table per RPC x status code, memory peaks, and the failures grouped."""
    table: dict[str, Counter] = defaultdict(Counter)
    for outcome in result.outcomes:
        table[outcome.case.rpc.name][outcome.code.name] += 1
    codes = sorted({code for row in table.values() for code in row})
    short = {code: {"RESOURCE_EXHAUSTED": "EXHAUSTED", "FAILED_PRECONDITION": "PRECONDITION", "DEADLINE_EXCEEDED": "DEADLINE",
                    "INVALID_ARGUMENT": "INVALID_ARG", "ALREADY_EXISTS": "EXISTS", "UNIMPLEMENTED": "UNIMPL",
                    "UNAVAILABLE": "UNAVAIL"}.get(code, code)[:12] for code in codes}
    width = max([len(r) for r in table] + [3])
    lines = [f"seed {settings.seed}: {result.sent} requests in {result.seconds:.1f} s "
             f"({len(result.outcomes)} answered, concurrency {1 if settings.only else settings.concurrency}, "
             f"deadline {settings.deadline:g} s)"]
    lines.append("RPC".ljust(width) + "".join(f"{short[c]:>13}" for c in codes))
    for rpc in sorted(table):
        lines.append(rpc.ljust(width) + "".join(f"{table[rpc][c] or '':>13}" for c in codes))
    spent: Counter = Counter()
    for outcome in result.outcomes:
        spent[outcome.case.rpc.name] += outcome.seconds
    lines.append("call-seconds by RPC (the most): " + ", ".join(f"{rpc} {seconds:.0f}" for rpc, seconds in spent.most_common(5)))
    if result.timed_out:
        lines.append(f"TIME BOUND: stopped after {settings.seconds:g} s (PIPEMESH_HOSTILE_SECONDS) with {result.sent} of "
                     f"{len(settings.only) or settings.requests} requests sent")
    peaks = ", ".join(f"{s.name} {s.peak_rss_mib:.0f}" for s in mesh.services)
    lines.append(f"peak VmRSS MiB: {peaks} (ps bound {settings.ps_rss_bound_mib}; "
                 f"--memory-budget-mib {'given' if mesh.memory_option else 'not supported by this binary'})")
    if result.death:
        d = result.death
        lines.append(f"DEATH: {d.service.name} {d.service.exit_description()} (seen after {d.detected_after} requests)")
        excerpt = "" if d.service.killed_for_memory else d.service.stderr_excerpt()
        if excerpt:
            lines.append("  stderr: " + excerpt.replace("\n", "\n          "))
        if d.culprit:
            c = d.culprit
            lines.append(f"  killed by request #{c.index}: {c.rpc.name} [{c.description}] ({c.size} bytes)")
            lines.append(f"  {d.culprit_note}")
            only = c.index if d.alone else ",".join(map(str, d.sequence))
            lines.append(f"  reproduce: PIPEMESH_HOSTILE_SEED={settings.seed} PIPEMESH_HOSTILE_ONLY={only}"
                         + (f" PIPEMESH_HOSTILE_RPCS={settings.rpcs}" if settings.rpcs else "")
                         + (f" PIPEMESH_HOSTILE_RSS_CAP_MIB={RSS_SAFETY_CAP_MIB}" if d.service.killed_for_memory else "")
                         + " pytest Tests/hostile")
        else:
            lines.append(f"  culprit not pinned: {d.culprit_note}; candidates: "
                         + ", ".join(f"#{c.index} {c.rpc.name}" for c in d.candidates[:10]))
        if d.growth:
            lines.append(f"  replayed one at a time, these grew {d.service.name} by more than {GROWTH_MIB} MiB each:")
            lines += [f"    +{mib:.0f} MiB #{c.index} {c.rpc.name} [{c.description[:150]}]" for mib, c in d.growth[:6]]
    if result.failures:
        groups: dict[tuple[str, str, str], list[Failure]] = defaultdict(list)
        for failure in result.failures:
            groups[(failure.problem, failure.rpc, failure.code)].append(failure)
        lines.append(f"{len(result.failures)} failing answers, {len(groups)} distinct (problem, RPC, code), with the first example:")
        problem = None
        for (kind, rpc, code), members in sorted(groups.items(), key=lambda item: (item[0][0], -len(item[1]))):
            if kind != problem:
                problem = kind
                lines.append(f"- {kind}:")
            lines.append(f"  x{len(members):<4} {members[0].line()}")
    return "\n".join(lines)


def write_log(result: RunResult, path: str) -> None:
    """One JSON line per answered request, for a closer look at a run."""
    with open(path, "w") as log:
        for o in sorted(result.outcomes, key=lambda o: o.case.index):
            log.write(json.dumps({"index": o.case.index, "rpc": o.case.rpc.name, "code": o.code.name, "seconds": round(o.seconds, 3),
                                  "bytes": o.case.size, "input": o.case.description, "details": o.details[:200]}) + "\n")


def test_hostile_requests(mesh: Mesh, mesh_factory: MeshFactory, protos: SimpleNamespace, settings: Settings,
                          request: pytest.FixtureRequest) -> None:
    """Thousands of hostile requests: no death, documented codes, short messages, bounded ps memory."""
    result = HostileRun(mesh, protos, settings).execute()
    if result.death:
        find_culprit(mesh_factory, protos, settings, result.death)
    summary = report(result, mesh, settings)
    if settings.log:
        write_log(result, settings.log)
    request.config.stash[SUMMARY_KEY] = summary
    problems = []
    if result.death:
        problems.append(f"{result.death.service.name} died")
    if result.failures:
        problems.append(f"{len(result.failures)} answers broke the contract")
    if result.timed_out and not result.death:
        problems.append(f"the time bound of {settings.seconds:g} s (PIPEMESH_HOSTILE_SECONDS) hit after {result.sent} of "
                        f"{len(settings.only) or settings.requests} requests: the mesh answers too slowly, or raise the bound")
    dead = [s.name for s in mesh.dead() if not result.death]
    if dead:
        problems.append(f"services gone at the end: {dead}")
    assert not problems, "; ".join(problems) + " (the 'hostile requests' section below has the details)\n" + summary.split("\n")[0]
