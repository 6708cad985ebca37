"""On a live cluster: the destructive helper refuses a namespace it did not create, and leaves it."""

from __future__ import annotations

import secrets

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from restoredrill.cluster.namespaces import delete_owned_namespace, new_run_id
from restoredrill.errors import NotOursError


@pytest.mark.cluster
def test_delete_owned_namespace_refuses_an_unlabelled_namespace(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    name = f"not-restoredrills-{secrets.token_hex(3)}"
    # Made directly through the API, without restoredrill's labels: to the guard, someone else's.
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"team": "media"})))
    try:
        with pytest.raises(NotOursError) as error:
            delete_owned_namespace(kube_api, name, run_id=new_run_id(), wait_timeout=60)

        assert f"refusing to delete namespace {name!r}" in str(error.value)
        assert "restoredrill.io/created-by=restoredrill" in str(error.value)
        still_there = core.read_namespace(name)
        assert still_there.status is not None and still_there.status.phase == "Active"
        assert still_there.metadata is not None and still_there.metadata.deletion_timestamp is None
    finally:
        # This test created it, so this test removes it, with the raw API.
        try:
            core.delete_namespace(name)
        except ApiException as cleanup_error:
            if cleanup_error.status != 404:
                raise
