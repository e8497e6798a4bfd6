"""The labels a sandbox's metrics carry besides its id: the Kubernetes pod it serves, when the
CRI plugin says so in the pod's annotations. Kept in sandbox.json (`extra["labels"]`)."""

from __future__ import annotations

from collections.abc import Mapping

# containerd's CRI plugin annotates every container of a pod with these
KUBE_ANNOTATIONS = {
    "io.kubernetes.cri.sandbox-namespace": "kube_namespace",
    "io.kubernetes.cri.sandbox-name": "kube_pod",
}
LABELS = tuple(KUBE_ANNOTATIONS.values())
MAX_VALUE = 253  # a Kubernetes name is at most this long


def from_annotations(annotations: Mapping[str, str] | None) -> dict[str, str]:
    found = {}
    for key, label in KUBE_ANNOTATIONS.items():
        value = (annotations or {}).get(key)
        if isinstance(value, str) and value:
            found[label] = value[:MAX_VALUE]
    return found
