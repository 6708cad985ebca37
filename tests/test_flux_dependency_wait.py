"""A Flux object that waits on a dependency names the dependency that is really stuck, down its chain."""

from typing import Any

from restoredrill.platform.flux import KUSTOMIZE_GROUP, KUSTOMIZE_VERSION, Flux


def kustomization(name: str, *, reason: str, message: str, depends: tuple[str, ...] = (),
                  ready: str = "False") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "flux-system", "generation": 1},
            "spec": {"dependsOn": [{"name": d} for d in depends]},
            "status": {"observedGeneration": 1,
                       "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message}]}}


class FakeContext:
    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects

    def get_object(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert (group, version, plural, namespace) == (KUSTOMIZE_GROUP, KUSTOMIZE_VERSION, "kustomizations",
                                                       "flux-system")
        return self.objects.get(name)


def blocking(objects: dict[str, dict[str, Any]], name: str) -> str:
    flux = Flux(FakeContext(objects))  # type: ignore[arg-type]
    return flux._blocking_dependency(KUSTOMIZE_GROUP, KUSTOMIZE_VERSION, "kustomizations", objects[name])


def test_the_stuck_dependency_is_named_down_the_chain() -> None:
    # cypr0/k8s-cluster: paperless waits on paperless-db, whose CNPG Cluster never gets healthy.
    objects = {
        "paperless": kustomization("paperless", reason="DependencyNotReady",
                                   message="dependency 'flux-system/paperless-db' is not ready",
                                   depends=("external-secrets-stores", "paperless-db")),
        "external-secrets-stores": kustomization("external-secrets-stores", reason="ReconciliationSucceeded",
                                                 message="Applied", ready="True"),
        "paperless-db": kustomization("paperless-db", reason="HealthCheckFailed",
                                      message="Cluster/productivity/cnpg-paperless status: 'Failed'"),
    }
    assert blocking(objects, "paperless") == (
        "; its dependency flux-system/paperless-db: Ready=False (HealthCheckFailed: "
        "Cluster/productivity/cnpg-paperless status: 'Failed')")
    # one level further down, and a dependency that does not exist
    objects["paperless-db"] = kustomization("paperless-db", reason="DependencyNotReady", message="...",
                                            depends=("cloudnative-pg",))
    assert blocking(objects, "paperless").endswith("its dependency flux-system/cloudnative-pg: not found")
    # not waiting on a dependency: nothing to add
    assert blocking(objects, "external-secrets-stores") == ""
