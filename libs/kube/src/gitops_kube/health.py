"""Whether a live object has finished rolling out, from its status alone.

Applying an object only says the API server accepted it; a release works when the controllers
have acted on it. The rules follow ``kubectl rollout status`` and Argo CD's built-in checks:
Deployments, StatefulSets and DaemonSets by observed generation and updated/available replicas,
Jobs by their Complete/Failed conditions, PVCs by being Bound, LoadBalancer Services by an
assigned ingress, CRDs by being Established, and any other object (custom resources) by a
standard ``Ready`` condition (``Stalled`` meaning it gave up). Objects with nothing to wait for
(ConfigMaps, Roles, ...) are healthy as soon as they exist. The assessment is a pure function of
the object so it can be tested without a cluster; waiting is the caller's loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class HealthState(StrEnum):
    """Where a rollout stands."""

    HEALTHY = "healthy"
    PROGRESSING = "progressing"
    FAILED = "failed"


@dataclass(frozen=True)
class Health:
    """An assessment: the state, a CamelCase reason and a message for people."""

    state: HealthState
    reason: str
    message: str


HEALTHY = Health(HealthState.HEALTHY, "Healthy", "nothing to wait for")


def _progressing(reason: str, message: str) -> Health:
    return Health(HealthState.PROGRESSING, reason, message)


def _healthy(message: str) -> Health:
    return Health(HealthState.HEALTHY, "Healthy", message)


def _failed(reason: str, message: str) -> Health:
    return Health(HealthState.FAILED, reason, message)


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    status = obj.get("status") or {}
    return {
        str(c.get("type")): c
        for c in status.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type")
    }


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


def _generation_pending(obj: Mapping[str, Any]) -> Health | None:
    generation = _int((obj.get("metadata") or {}).get("generation"))
    observed = _int((obj.get("status") or {}).get("observedGeneration"), -1)
    if observed < generation:
        return _progressing(
            "GenerationNotObserved",
            f"waiting for the controller to observe generation {generation}",
        )
    return None


def _deployment(obj: Mapping[str, Any]) -> Health:
    if (pending := _generation_pending(obj)) is not None:
        return pending
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    progressing = _conditions(obj).get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        message = progressing.get("message") or "the rollout exceeded its progress deadline"
        return _failed("ProgressDeadlineExceeded", str(message))
    if spec.get("paused"):
        return _healthy("the Deployment is paused")
    wanted = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < wanted:
        return _progressing("RolloutInProgress", f"{updated} of {wanted} replicas updated")
    if total > updated:
        return _progressing(
            "RolloutInProgress", f"{total - updated} old replicas are pending termination"
        )
    if available < updated:
        return _progressing(
            "ReplicasUnavailable", f"{available} of {updated} updated replicas available"
        )
    return _healthy(f"{available} of {wanted} replicas available")


def _stateful_set(obj: Mapping[str, Any]) -> Health:
    if (pending := _generation_pending(obj)) is not None:
        return pending
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    wanted = _int(spec.get("replicas"), 1)
    ready = _int(status.get("readyReplicas"))
    if ready < wanted:
        return _progressing("ReplicasNotReady", f"{ready} of {wanted} replicas ready")
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        partition = _int((strategy.get("rollingUpdate") or {}).get("partition"))
        if partition > 0:
            updated = _int(status.get("updatedReplicas"))
            if updated < wanted - partition:
                return _progressing(
                    "RolloutInProgress", f"{updated} of {wanted - partition} replicas updated"
                )
        elif status.get("updateRevision") != status.get("currentRevision"):
            return _progressing("RolloutInProgress", "waiting for the rolling update to complete")
    return _healthy(f"{ready} of {wanted} replicas ready")


def _daemon_set(obj: Mapping[str, Any]) -> Health:
    if (pending := _generation_pending(obj)) is not None:
        return pending
    status = obj.get("status") or {}
    wanted = _int(status.get("desiredNumberScheduled"))
    updated = _int(status.get("updatedNumberScheduled"))
    available = _int(status.get("numberAvailable"))
    if updated < wanted:
        return _progressing("RolloutInProgress", f"{updated} of {wanted} pods updated")
    if available < wanted:
        return _progressing("PodsUnavailable", f"{available} of {wanted} pods available")
    return _healthy(f"{available} of {wanted} pods available")


def _job(obj: Mapping[str, Any]) -> Health:
    conditions = _conditions(obj)
    for kind in ("Failed", "FailureTarget"):
        condition = conditions.get(kind)
        if condition and condition.get("status") == "True":
            return _failed(
                str(condition.get("reason") or "JobFailed"),
                str(condition.get("message") or "the Job failed"),
            )
    complete = conditions.get("Complete")
    if complete and complete.get("status") == "True":
        return _healthy("the Job completed")
    if (obj.get("spec") or {}).get("suspend"):
        return _healthy("the Job is suspended")
    return _progressing("JobRunning", "waiting for the Job to complete")


def _persistent_volume_claim(obj: Mapping[str, Any]) -> Health:
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Bound":
        return _healthy("the claim is bound")
    if phase == "Lost":
        return _failed("ClaimLost", "the claim lost its volume")
    return _progressing("ClaimPending", f"the claim is {phase or 'Pending'}, not Bound")


def _service(obj: Mapping[str, Any]) -> Health:
    if (obj.get("spec") or {}).get("type") != "LoadBalancer":
        return HEALTHY
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    if ingress:
        return _healthy("the load balancer has an address")
    return _progressing("LoadBalancerPending", "waiting for a load balancer address")


def _custom_resource_definition(obj: Mapping[str, Any]) -> Health:
    conditions = _conditions(obj)
    names = conditions.get("NamesAccepted")
    if names and names.get("status") == "False":
        return _failed(
            str(names.get("reason") or "NamesNotAccepted"),
            str(names.get("message") or "the CRD's names were not accepted"),
        )
    established = conditions.get("Established")
    if established and established.get("status") == "True":
        return _healthy("the CRD is established")
    return _progressing("NotEstablished", "waiting for the CRD to be established")


def _ready_condition(obj: Mapping[str, Any]) -> Health:
    conditions = _conditions(obj)
    stalled = conditions.get("Stalled")
    if stalled and stalled.get("status") == "True":
        return _failed(
            str(stalled.get("reason") or "Stalled"),
            str(stalled.get("message") or "the object stalled"),
        )
    ready = conditions.get("Ready")
    if ready is None:
        return HEALTHY
    # kstatus: a status (or a condition) that reports an older generation is stale.
    generation = _int((obj.get("metadata") or {}).get("generation"))
    observed = min(
        _int((obj.get("status") or {}).get("observedGeneration"), generation),
        _int(ready.get("observedGeneration"), generation),
    )
    if observed < generation:
        return _progressing(
            "GenerationNotObserved", f"the status is about generation {observed}, not {generation}"
        )
    if ready.get("status") == "True":
        return _healthy(str(ready.get("message") or "Ready"))
    return _progressing(
        str(ready.get("reason") or "NotReady"),
        str(ready.get("message") or "waiting for the Ready condition"),
    )


_BY_KIND: dict[tuple[str, str], Callable[[Mapping[str, Any]], Health]] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _stateful_set,
    ("apps", "DaemonSet"): _daemon_set,
    ("batch", "Job"): _job,
    ("", "PersistentVolumeClaim"): _persistent_volume_claim,
    ("", "Service"): _service,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _custom_resource_definition,
}


def assess(obj: Mapping[str, Any], group: str | None = None) -> Health:
    """Assess one live object. ``group`` overrides the one in its apiVersion (list items)."""
    api_version = str(obj.get("apiVersion") or "")
    if group is None:
        group = api_version.rpartition("/")[0]
    check = _BY_KIND.get((group, str(obj.get("kind") or "")), _ready_condition)
    return check(obj)
