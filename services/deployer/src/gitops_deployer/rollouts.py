"""Making one cluster match one desired state: dry-run, apply, prune, then wait for health.

The order is what makes a bad revision harmless. The whole set is dry-run on the server first
(real validation and admission, nothing stored), so a schema error, an unknown field or a refused
object stops the revision before anything is written. Then Namespaces and CRDs are applied (and
CRDs waited for until established), then everything else. Objects the server cannot dry-run
before that first batch exists (those in a namespace the revision creates, or of a kind its own
CRD defines) are dry-run right after it; only those can fail once the first batch is written,
which is Flux's staged apply too.

SealedSecrets are opened into Secrets before planning (see ``unsealing``): a SealedSecret that
does not open rejects the revision like any other planning failure, before anything is written.

Objects whose dry-run result equals the live object are not written again (counted unchanged).
Prune runs only after everything applied, lists owned objects (both ownership labels) of the
kinds in the inventory and the current set, and deletes the ones Git no longer has; the
inventory is written before the second batch (old and new entries, so an interrupted apply still
leaves everything findable) and again after prune (the new entries only).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from opentelemetry import trace

from gitops_config.models import Environment
from gitops_deployer import planning, unsealing
from gitops_deployer.planning import DeployError, ObjectKey, Plan, PlannedObject, RejectedError
from gitops_events import DesiredState
from gitops_kube import applying, health, inventory
from gitops_kube.clients import KubeApiError
from gitops_kube.discovery import ResourceType
from gitops_kube.sessions import Session
from gitops_telemetry import tracing

CONCURRENCY = 16
"""Requests in flight at once per rollout."""

ESTABLISH_TIMEOUT_SECONDS = 60.0
"""How long applied CRDs may take to become established (capped by the health timeout)."""


T = TypeVar("T")
R = TypeVar("R")


class PartlyAppliedError(DeployError):
    """The rollout stopped after it had started writing; the revision is partly applied."""


@dataclass(frozen=True)
class Result:
    """What converging did: counts, duration and the last observation of every object."""

    plan: Plan
    applied: int
    unchanged: int
    pruned: int
    apply_seconds: float
    observed: dict[ObjectKey, dict[str, Any]]


class Verdict(StrEnum):
    """How waiting for health ended."""

    HEALTHY = "healthy"
    TIMED_OUT = "timed-out"
    FAILED = "failed"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class HealthReport:
    """The verdict, and for anything but healthy the object at fault and its assessment."""

    verdict: Verdict
    waited_seconds: float
    culprit: PlannedObject | None = None
    health: health.Health | None = None


def _tracer() -> trace.Tracer:
    return tracing.tracer("gitops_deployer")


async def _bounded(
    items: Sequence[T], call: Callable[[T], Awaitable[R]]
) -> list[R | BaseException]:
    """Run call on every item, at most CONCURRENCY at once; results (or errors) in item order."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: T) -> R:
        async with gate:
            return await call(item)

    return await asyncio.gather(*(one(item) for item in items), return_exceptions=True)


def _failures(results: Sequence[object]) -> list[tuple[int, KubeApiError | DeployError]]:
    """The expected failures among results, in order; anything unexpected is raised again."""
    failures: list[tuple[int, KubeApiError | DeployError]] = []
    for index, result in enumerate(results):
        if isinstance(result, KubeApiError | DeployError):
            failures.append((index, result))
        elif isinstance(result, BaseException):
            raise result
    return failures


def _without_times(obj: Mapping[str, Any]) -> dict[str, Any]:
    metadata = dict(obj.get("metadata") or {})
    metadata["managedFields"] = [
        {k: v for k, v in entry.items() if k != "time"}
        for entry in metadata.get("managedFields") or []
    ]
    return {**obj, "metadata": metadata}


def unchanged(live: Mapping[str, Any] | None, dry_run: Mapping[str, Any]) -> bool:
    """Whether applying would change nothing: the dry-run result is the live object as it is."""
    return live is not None and _without_times(live) == _without_times(dry_run)


class Rollout:
    """Converges one cluster to one desired state of one app environment."""

    def __init__(
        self,
        session: Session,
        environment: Environment,
        state: DesiredState,
        *,
        unseal: unsealing.Unseal,
    ) -> None:
        """Aim at a cluster session with the environment's configuration.

        ``unseal`` opens the SealedSecrets of ``state`` into Secrets before it is planned.
        """
        self.session = session
        self.environment = environment
        self.state = state
        self.owner = planning.owner_labels(state.app, state.environment)
        self._api = session.api
        self._unseal = unseal

    async def plan(self) -> tuple[Plan, set[str]]:
        """Open the SealedSecrets, discover the kinds and plan.

        Returns the plan and the target namespaces that exist. Raises RejectedError (nothing
        written) for a SealedSecret that does not open and for anything planning refuses.
        """
        state = self.state
        if sealed_count := unsealing.count_sealed(state):
            with _tracer().start_as_current_span(
                "unseal", attributes=self._attributes(objects=sealed_count)
            ):
                state = await self._unseal(state, self.environment)
        served: dict[planning.TypeKey, ResourceType] = {}
        for type_key in sorted(planning.requested_types(state)):
            found = await self._call("DiscoveryFailed", self.session.discovery.find(*type_key))
            if found is not None:
                served[type_key] = found
        plan = planning.plan(state, self.environment, served)
        namespaces = sorted(plan.target_namespaces() | {self.environment.namespace})
        results = await _bounded(namespaces, self._namespace_exists)
        if failures := _failures(results):
            raise self._problem("NamespaceCheckFailed", None, failures[0][1], written=False)
        existing = {ns for ns, found in zip(namespaces, results, strict=True) if found is True}
        plan = planning.with_environment_namespace(plan, self.environment, existing)
        plan.check_namespaces(existing)
        return plan, existing

    async def converge(
        self,
        plan: Plan,
        existing_namespaces: set[str],
        *,
        on_applied: Callable[[Result], Awaitable[None]] | None = None,
    ) -> Result:
        """Dry-run, apply both batches, prune and record the inventory.

        on_applied hears of the applied objects as soon as they are written, before pruning,
        so "applied" is reported when it is true rather than after the clean-up.

        Raises RejectedError when nothing was written, PartlyAppliedError when the revision is
        partly applied.
        """
        name = planning.inventory_name(self.state.app, self.state.environment)
        try:
            previous = await inventory.read(self._api, self.environment.namespace, name)
        except ValueError as exc:
            raise RejectedError("InventoryInvalid", str(exc)) from None
        except KubeApiError as exc:
            raise self._problem("InventoryUnreadable", None, exc, written=False) from None

        later = plan.dry_run_later(existing_namespaces)
        with _tracer().start_as_current_span(
            "dry-run", attributes=self._attributes(objects=len(plan.objects) - len(later))
        ):
            observed, changed = await self._dry_run(
                [o for o in plan.objects if o.key not in later], written=False
            )

        started = time.perf_counter()
        applied = 0
        with _tracer().start_as_current_span(
            "apply", attributes=self._attributes(batch="definitions", objects=len(plan.definitions))
        ):
            applied += await self._apply(plan.definitions, observed, changed, done=0)
            crds = [
                o for o in plan.definitions if (o.resource.group, o.resource.kind) == planning.CRD
            ]
            if any(o.key in changed for o in crds):
                await self._wait_established(crds)
                self.session.discovery.forget()

        if later:
            with _tracer().start_as_current_span(
                "dry-run", attributes=self._attributes(objects=len(later), deferred=True)
            ):
                more, more_changed = await self._dry_run(
                    [o for o in plan.objects if o.key in later], written=True
                )
            observed.update(more)
            changed |= more_changed

        entries = [o.entry for o in plan.objects]
        await self._write_inventory(name, previous.merged(entries))
        with _tracer().start_as_current_span(
            "apply", attributes=self._attributes(batch="objects", objects=len(plan.others))
        ):
            applied += await self._apply(plan.others, observed, changed, done=applied)
        apply_seconds = time.perf_counter() - started
        if on_applied is not None:
            await on_applied(
                Result(plan, applied, len(plan.objects) - applied, 0, apply_seconds, observed)
            )

        pruned = 0
        if self.environment.prune:
            with _tracer().start_as_current_span("prune", attributes=self._attributes()):
                pruned = await self._prune(plan, previous)
        await self._write_inventory(
            name, inventory.Inventory(self.state.revision, self.state.digest, frozenset(entries))
        )
        return Result(plan, applied, len(plan.objects) - applied, pruned, apply_seconds, observed)

    async def wait_healthy(
        self,
        result: Result,
        *,
        limit_seconds: float,
        interval: float,
        superseded: asyncio.Event,
    ) -> HealthReport:
        """Poll the applied objects until all are healthy, one failed, or the wait ends.

        The wait ends after ``limit_seconds`` or as soon as ``superseded`` is set (a newer desired
        state arrived).
        """
        started = time.monotonic()
        deadline = started + limit_seconds
        pending = list(result.plan.objects)
        observed = dict(result.observed)
        with _tracer().start_as_current_span(
            "health wait",
            attributes=self._attributes(objects=len(pending), limit_seconds=limit_seconds),
        ) as span:
            while True:
                assessed = [(o, self._assess(o, observed.get(o.key))) for o in pending]
                failed = next(
                    ((o, h) for o, h in assessed if h.state is health.HealthState.FAILED), None
                )
                if failed is not None:
                    span.set_attribute("verdict", Verdict.FAILED.value)
                    return HealthReport(Verdict.FAILED, time.monotonic() - started, *failed)
                pending = [o for o, h in assessed if h.state is not health.HealthState.HEALTHY]
                if not pending:
                    span.set_attribute("verdict", Verdict.HEALTHY.value)
                    return HealthReport(Verdict.HEALTHY, time.monotonic() - started)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    culprit = pending[0]
                    span.set_attribute("verdict", Verdict.TIMED_OUT.value)
                    return HealthReport(
                        Verdict.TIMED_OUT,
                        time.monotonic() - started,
                        culprit,
                        self._assess(culprit, observed.get(culprit.key)),
                    )
                try:
                    await asyncio.wait_for(superseded.wait(), min(interval, remaining))
                except TimeoutError:
                    pass
                else:
                    span.set_attribute("verdict", Verdict.SUPERSEDED.value)
                    return HealthReport(Verdict.SUPERSEDED, time.monotonic() - started)
                reads = await _bounded(pending, self._read)
                for obj, read in zip(pending, reads, strict=True):
                    if isinstance(read, BaseException):
                        if not isinstance(read, KubeApiError):
                            raise read
                        continue  # a failed read is retried at the next poll
                    if read is None:
                        observed.pop(obj.key, None)
                    else:
                        observed[obj.key] = read

    # --- steps ---------------------------------------------------------------------------------

    async def _dry_run(
        self, objects: Sequence[PlannedObject], *, written: bool
    ) -> tuple[dict[ObjectKey, dict[str, Any]], set[ObjectKey]]:
        """Read and dry-run the objects; the dry-run results and the keys that would change.

        A dry-run writes nothing, so reads and dry-runs go out together (one round trip of
        latency instead of two); their answers are then judged in the same order as before:
        a failed read, then an ownership conflict, then a failed dry-run.
        """
        lives, results = await asyncio.gather(
            _bounded(objects, self._read),
            _bounded(
                objects,
                lambda o: applying.apply(
                    self._api,
                    o.resource,
                    o.manifest,
                    field_manager=planning.FIELD_MANAGER,
                    dry_run=True,
                ),
            ),
        )
        if failures := _failures(lives):
            index, error = failures[0]
            raise self._problem("ReadFailed", objects[index], error, written=written)
        for obj, live in zip(objects, lives, strict=True):
            self._check_owner(obj, live if isinstance(live, dict) else None)
        if failures := _failures(results):
            index, error = failures[0]
            problem = self._problem("DryRunFailed", objects[index], error, written=written)
            if len(failures) > 1:
                problem.message += f" (and {len(failures) - 1} more objects failed the dry-run)"
            raise problem
        observed: dict[ObjectKey, dict[str, Any]] = {}
        changed: set[ObjectKey] = set()
        for obj, live, dry in zip(objects, lives, results, strict=True):
            if isinstance(dry, dict):
                observed[obj.key] = dry
                if not unchanged(live if isinstance(live, dict) else None, dry):
                    changed.add(obj.key)
        return observed, changed

    async def _apply(
        self,
        objects: Sequence[PlannedObject],
        observed: dict[ObjectKey, dict[str, Any]],
        changed: set[ObjectKey],
        *,
        done: int,
    ) -> int:
        """Apply the objects that would change; how many were written."""
        writes = [o for o in objects if o.key in changed]
        results = await _bounded(
            writes,
            lambda o: applying.apply(
                self._api, o.resource, o.manifest, field_manager=planning.FIELD_MANAGER
            ),
        )
        written = 0
        for obj, result in zip(writes, results, strict=True):
            if isinstance(result, dict):
                observed[obj.key] = result
                written += 1
        if failures := _failures(results):
            index, error = failures[0]
            failure = self._problem("ApplyFailed", writes[index], error, written=True)
            failure.message += f" ({done + written} objects were applied before it failed)"
            raise failure
        return written

    async def _wait_established(self, crds: Sequence[PlannedObject]) -> None:
        deadline = time.monotonic() + min(
            ESTABLISH_TIMEOUT_SECONDS, self.environment.health_timeout_seconds
        )
        for crd in crds:
            while True:
                live = await self._call("ReadFailed", self._read(crd), written=True)
                verdict = self._assess(crd, live)
                if verdict.state is health.HealthState.HEALTHY:
                    break
                if verdict.state is health.HealthState.FAILED or time.monotonic() > deadline:
                    raise PartlyAppliedError(
                        "CRDNotEstablished",
                        f"{crd.describe()}: {verdict.reason}: {verdict.message}",
                        source=crd.source,
                        involved_object=crd.ref,
                    )
                await asyncio.sleep(0.2)

    async def _prune(self, plan: Plan, previous: inventory.Inventory) -> int:
        kinds = previous.kinds() | {(o.resource.api_version, o.resource.kind) for o in plan.objects}
        resources: dict[tuple[str, str], ResourceType] = {}
        for api_version, kind in sorted(kinds):
            found = await self._call(
                "PruneFailed", self.session.discovery.find(api_version, kind), written=True
            )
            if found is not None:
                resources.setdefault((found.group, found.kind), found)
        listings: list[tuple[ResourceType, str | None]] = []
        for resource in resources.values():
            if (resource.group, resource.kind) in planning.NEVER_PRUNED:
                continue
            if resource.namespaced:
                listings += [(resource, ns) for ns in self.environment.allowed_namespaces]
            elif resource.kind in self.environment.allow_cluster_scoped:
                listings.append((resource, None))
        lists = await _bounded(
            listings, lambda rn: applying.list_labelled(self._api, rn[0], self.owner, rn[1])
        )
        if failures := _failures(lists):
            raise PartlyAppliedError(
                "PruneFailed", f"listing owned objects failed: {_describe(failures[0][1])}"
            )
        live = [
            (resource, item)
            for (resource, _), items in zip(listings, lists, strict=True)
            if isinstance(items, list)
            for item in items
        ]
        victims = planning.prunable(live, plan.keys(), self.environment, self.owner)
        deleted = await _bounded(
            victims,
            lambda v: applying.delete(
                self._api,
                v[0],
                str(v[1]["metadata"]["name"]),
                v[1]["metadata"].get("namespace") if v[0].namespaced else None,
                uid=v[1]["metadata"].get("uid"),
            ),
        )
        if failures := _failures(deleted):
            index, error = failures[0]
            resource, obj = victims[index]
            metadata = obj["metadata"]
            where = f"{metadata.get('namespace')}/" if resource.namespaced else ""
            raise PartlyAppliedError(
                "PruneFailed",
                f"deleting {resource.kind} {where}{metadata['name']} failed: {_describe(error)}",
            )
        return sum(1 for d in deleted if d is True)

    async def _write_inventory(self, name: str, record: inventory.Inventory) -> None:
        try:
            await inventory.write(
                self._api,
                self.environment.namespace,
                name,
                record,
                field_manager=planning.FIELD_MANAGER,
                labels=planning.inventory_labels(self.state.app, self.state.environment),
            )
        except KubeApiError as exc:
            raise PartlyAppliedError(
                "InventoryFailed",
                f"recording the inventory ConfigMap {self.environment.namespace}/{name} "
                f"failed: {_describe(exc)}",
            ) from None

    # --- helpers -------------------------------------------------------------------------------

    async def _namespace_exists(self, namespace: str) -> bool:
        try:
            return await applying.get(self._api, planning.NAMESPACE_TYPE, namespace) is not None
        except KubeApiError as exc:
            # An identity confined to its namespaces may not read Namespace objects; the dry-run
            # then reports a namespace that really is missing.
            if exc.status == 403:
                return True
            raise

    async def _read(self, obj: PlannedObject) -> dict[str, Any] | None:
        # Before its CRD is established, the path of a custom resource answers 404 like a
        # missing object: None either way.
        return await applying.get(self._api, obj.resource, obj.name, obj.namespace)

    def _check_owner(self, obj: PlannedObject, live: Mapping[str, Any] | None) -> None:
        """Refuse to take over an object that another app or environment owns."""
        labels = ((live or {}).get("metadata") or {}).get("labels") or {}
        theirs = (labels.get(planning.APP_LABEL), labels.get(planning.ENVIRONMENT_LABEL))
        if theirs == (None, None) or theirs == (self.state.app, self.state.environment):
            return
        raise RejectedError(
            "OwnershipConflict",
            f"{obj.describe()} already exists and belongs to app {theirs[0]!r} environment "
            f"{theirs[1]!r}; rename it, or remove it from one of the two",
            source=obj.source,
            involved_object=obj.ref,
        )

    def _assess(self, obj: PlannedObject, live: Mapping[str, Any] | None) -> health.Health:
        if live is None:
            return health.Health(
                health.HealthState.PROGRESSING, "Missing", "the object does not exist"
            )
        return health.assess(live, obj.resource.group)

    def _attributes(self, **extra: object) -> dict[str, Any]:
        return {
            "gitops.app": self.state.app,
            "gitops.environment": self.state.environment,
            "gitops.revision": self.state.revision,
            **{f"gitops.{k}": v for k, v in extra.items()},
        }

    async def _call(self, reason: str, call: Awaitable[T], *, written: bool = False) -> T:
        try:
            return await call
        except KubeApiError as exc:
            kind = PartlyAppliedError if written else RejectedError
            raise kind(reason, _describe(exc)) from None

    def _problem(
        self,
        reason: str,
        obj: PlannedObject | None,
        error: KubeApiError | DeployError,
        *,
        written: bool,
    ) -> DeployError:
        if isinstance(error, DeployError):
            return error
        kind = PartlyAppliedError if written else RejectedError
        if obj is None:
            return kind(reason, _describe(error))
        return kind(
            reason,
            f"{obj.describe()}: {_describe(error)}",
            source=obj.source,
            involved_object=obj.ref,
        )


def _describe(error: BaseException) -> str:
    """The API server's answer as a safe sentence (values were masked by gitops_kube)."""
    if isinstance(error, KubeApiError):
        return f"{error.reason or error.status}: {error.message}"
    return f"{type(error).__name__}: {error}"
