"""The S3 object store Velero and CNPG write to: MinIO (default) or SeaweedFS's S3 gateway.

It runs in the cluster behind a Service, with its data in a host directory the caller passes (a
hostPath volume on the object store's own pod: Velero never backs that pod up, and the directory
survives a cluster rebuild). Credentials are generated per run and live only in Secrets; nothing
here prints them (`ObjectStoreCredentials.__repr__` hides them). The buckets are created through
the S3 API over a `kubectl port-forward`, which works the same on every provider.
"""

from __future__ import annotations

import queue
import re
import secrets
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from restoredrill.errors import CommandError, ConfigError
from restoredrill.kube import find_kubectl
from restoredrill.platform.base import Manifest, PlatformContext, PlatformError, image_ref, labels
from restoredrill.platform.s3 import S3Client, S3Error
from restoredrill.timeouts import timeout
from restoredrill.waits import wait_until

VELERO_BUCKET = "velero"
CNPG_BUCKET = "cnpg"
# The region the BSL and barman-cloud sign with; MinIO and SeaweedFS accept any when none is set.
REGION = "us-east-1"


@dataclass(frozen=True)
class ObjectStoreCredentials:
    """An access key pair generated for one run; its repr never shows the values."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> ObjectStoreCredentials:
        # Letters and digits only: safe in an AWS credentials file, a URL and a shell.
        return cls(access_key="rd" + secrets.token_hex(9), secret_key=secrets.token_hex(24))

    def aws_credentials_file(self) -> str:
        """The `cloud` key of Velero's credentials Secret (an AWS shared credentials file)."""
        return f"[default]\naws_access_key_id={self.access_key}\naws_secret_access_key={self.secret_key}\n"

    def __str__(self) -> str:
        return "ObjectStoreCredentials(<redacted>)"


@dataclass(frozen=True)
class S3Endpoint:
    """How clients in the cluster reach the store: what a BSL or barmanObjectStore needs."""

    url: str  # http://minio.minio.svc.cluster.local:9000
    region: str
    velero_bucket: str
    cnpg_bucket: str


class ObjectStore:
    """Common install / wait_ready / client / uninstall of an in-cluster S3 store."""

    kind: ClassVar[str]
    logical_image: ClassVar[str]
    port: ClassVar[int]

    def __init__(self, ctx: PlatformContext, *, data_dir: Path, namespace: str | None = None,
                 credentials: ObjectStoreCredentials | None = None,
                 buckets: tuple[str, ...] = (VELERO_BUCKET, CNPG_BUCKET)) -> None:
        if not data_dir.is_absolute():
            raise ConfigError(f"object store data directory {data_dir} is not absolute",
                              remedy="pass an absolute host path (it is mounted as a hostPath volume)")
        self.ctx = ctx
        self.data_dir = data_dir
        self.namespace = namespace or self.kind
        self.credentials = credentials or ObjectStoreCredentials.generate()
        self.buckets = buckets
        self.service = self.kind
        self.secret_name = f"{self.kind}-credentials"

    # ---- what is installed --------------------------------------------------------------------
    @property
    def endpoint(self) -> S3Endpoint:
        return S3Endpoint(url=f"http://{self.service}.{self.namespace}.svc.cluster.local:{self.port}",
                          region=REGION, velero_bucket=self.buckets[0], cnpg_bucket=self.buckets[-1])

    def manifests(self) -> list[Manifest]:
        return [self.namespace_manifest(), *self.server_manifests(), self.service_manifest()]

    def namespace_manifest(self) -> Manifest:
        return {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": self.namespace, "labels": labels(self.kind)}}

    def server_manifests(self) -> list[Manifest]:
        raise NotImplementedError

    def credentials_from_secret(self, data: dict[str, str]) -> ObjectStoreCredentials:
        """Credentials from the decoded data of this store's Secret."""
        raise NotImplementedError

    def installed_credentials(self) -> ObjectStoreCredentials | None:
        """The credentials of an already installed store (read from its Secret), else None.

        Lets a second session (or xdist worker) reuse the store instead of generating new keys.
        """
        import base64

        from kubernetes.client.exceptions import ApiException

        try:
            secret = self.ctx.core.read_namespaced_secret(self.secret_name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
        return self.credentials_from_secret(data)

    def adopt_installed_credentials(self) -> bool:
        """Use the installed store's credentials, if there is one; True when it was found."""
        found = self.installed_credentials()
        if found is not None:
            self.credentials = found
        return found is not None

    def service_manifest(self) -> Manifest:
        return {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": self.service, "namespace": self.namespace, "labels": labels(self.kind)},
            "spec": {"selector": {"app.kubernetes.io/name": self.kind},
                     "ports": [{"name": "s3", "port": self.port, "targetPort": self.port}]},
        }

    def data_volume(self) -> Manifest:
        return {"name": "data", "hostPath": {"path": str(self.data_dir), "type": "DirectoryOrCreate"}}

    # ---- lifecycle -----------------------------------------------------------------------------
    def install(self) -> None:
        self.ctx.apply(self.manifests())

    def wait_ready(self) -> None:
        """Server pod Ready, then the buckets created (idempotent) through the S3 API."""
        self.ctx.wait_for_pods_ready(namespace=self.namespace, selector=f"app.kubernetes.io/name={self.kind}",
                                     what=f"{self.kind} object store", expected=1)
        with self.client() as s3:
            def create_buckets() -> tuple[bool | None, str]:
                try:
                    for bucket in self.buckets:
                        s3.create_bucket(bucket)
                except S3Error as error:  # the gateway may answer before its backend is up
                    return None, error.message
                return True, "buckets created"

            wait_until(f"buckets {', '.join(self.buckets)} in {self.kind}", create_buckets,
                       timeout=self.ctx.timeout("platform_ready"))

    def uninstall(self) -> None:
        """Remove the store's objects; the data directory on the host is left for the caller."""
        self.ctx.delete([self.namespace_manifest()], wait=True)

    def scale(self, replicas: int) -> None:
        """Stop (0) or start (1) the server: how a drill takes the object store down."""
        self.ctx.apps.patch_namespaced_deployment_scale(self.kind, self.namespace, {"spec": {"replicas": replicas}})

    @contextmanager
    def client(self) -> Iterator[S3Client]:
        """An S3 client on the host, through a port-forward to the Service (closed on exit)."""
        with port_forward(self.ctx, namespace=self.namespace, target=f"svc/{self.service}", port=self.port) as local:
            yield S3Client(endpoint=f"http://127.0.0.1:{local}", access_key=self.credentials.access_key,
                           secret_key=self.credentials.secret_key, region=REGION)


class MinioObjectStore(ObjectStore):
    kind = "minio"
    logical_image = "minio"
    port = 9000

    def server_manifests(self) -> list[Manifest]:
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": self.secret_name, "namespace": self.namespace, "labels": labels(self.kind)},
            "stringData": {"MINIO_ROOT_USER": self.credentials.access_key,
                           "MINIO_ROOT_PASSWORD": self.credentials.secret_key},
        }
        container = {
            "name": "minio",
            "image": image_ref(self.ctx.images, self.logical_image),
            "imagePullPolicy": "IfNotPresent",
            # `minio` is on PATH in upstream's image and in the locally built one.
            "command": ["minio", "server", "/data", "--address", f":{self.port}", "--console-address", ":9001"],
            "env": [
                {"name": "MINIO_BROWSER", "value": "off"},
                {"name": "HOME", "value": "/tmp"},
                *({"name": key, "valueFrom": {"secretKeyRef": {"name": self.secret_name, "key": key}}}
                  for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")),
            ],
            "ports": [{"name": "s3", "containerPort": self.port}],
            "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": self.port},
                               "periodSeconds": 2, "failureThreshold": 3},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        }
        deployment = _single_pod_deployment(self.kind, self.namespace, container,
                                            volumes=[self.data_volume(), {"name": "tmp", "emptyDir": {}}])
        return [secret, deployment]

    def credentials_from_secret(self, data: dict[str, str]) -> ObjectStoreCredentials:
        return ObjectStoreCredentials(access_key=data["MINIO_ROOT_USER"], secret_key=data["MINIO_ROOT_PASSWORD"])


class SeaweedfsObjectStore(ObjectStore):
    """SeaweedFS (master, volume, filer and S3 gateway in one `weed server`), the production store."""

    kind = "seaweedfs"
    logical_image = "seaweedfs"
    port = 8333

    def s3_identities(self) -> str:
        import json

        return json.dumps({"identities": [{
            "name": "restoredrill",
            "credentials": [{"accessKey": self.credentials.access_key, "secretKey": self.credentials.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]})

    def server_manifests(self) -> list[Manifest]:
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": self.secret_name, "namespace": self.namespace, "labels": labels(self.kind)},
            "stringData": {"s3.json": self.s3_identities()},
        }
        container = {
            "name": "seaweedfs",
            "image": image_ref(self.ctx.images, self.logical_image),
            "imagePullPolicy": "IfNotPresent",
            "command": ["weed", "server", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", "-s3",
                        f"-s3.port={self.port}", "-s3.config=/etc/seaweedfs/s3.json",
                        "-master.volumeSizeLimitMB=64", "-volume.max=0"],
            "ports": [{"name": "s3", "containerPort": self.port}],
            "readinessProbe": {"tcpSocket": {"port": self.port}, "periodSeconds": 2},
            "volumeMounts": [{"name": "data", "mountPath": "/data"},
                             {"name": "s3-config", "mountPath": "/etc/seaweedfs", "readOnly": True}],
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        }
        deployment = _single_pod_deployment(
            self.kind, self.namespace, container,
            volumes=[self.data_volume(), {"name": "s3-config", "secret": {"secretName": self.secret_name}}])
        return [secret, deployment]

    def credentials_from_secret(self, data: dict[str, str]) -> ObjectStoreCredentials:
        import json

        identity = json.loads(data["s3.json"])["identities"][0]["credentials"][0]
        return ObjectStoreCredentials(access_key=identity["accessKey"], secret_key=identity["secretKey"])


OBJECT_STORES: dict[str, type[ObjectStore]] = {"minio": MinioObjectStore, "seaweedfs": SeaweedfsObjectStore}


def object_store_for(kind: str) -> type[ObjectStore]:
    """The class behind `--object-store KIND`."""
    try:
        return OBJECT_STORES[kind]
    except KeyError:
        raise ConfigError(f"unknown object store {kind!r}",
                          remedy=f"choose one of {', '.join(OBJECT_STORES)}") from None


def _single_pod_deployment(name: str, namespace: str, container: Manifest, *, volumes: list[Manifest]) -> Manifest:
    selector = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "replicas": 1,
            # One writer on the host directory at a time.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels(name)},
                         "spec": {"containers": [container], "volumes": volumes,
                                  "terminationGracePeriodSeconds": 5}},
        },
    }


_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


@contextmanager
def port_forward(ctx: PlatformContext, *, namespace: str, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` to a random local port; yields that port, stops the process on exit."""
    command = [find_kubectl(), f"--kubeconfig={ctx.cluster.kubeconfig}"]
    if ctx.cluster.context:
        command.append(f"--context={ctx.cluster.context}")
    command += ["-n", namespace, "port-forward", "--address=127.0.0.1", target, f":{port}"]
    # A long-lived child: bounded by this context manager (terminated, then killed, on exit).
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    # kubectl prints the local port on stdout; read it in a thread so the wait below can time out.

    def read_lines() -> None:
        for line in process.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        seen: list[str] = []

        def forwarded() -> tuple[int | None, str]:
            while not lines.empty():
                seen.append(lines.get_nowait())
                found = _FORWARDING.search(seen[-1])
                if found:
                    return int(found.group(1)), seen[-1].strip()
            if process.poll() is not None:
                reader.join(timeout=timeout("process_stop"))  # what kubectl said before it exited
                while not lines.empty():
                    seen.append(lines.get_nowait())
                raise CommandError(command, returncode=process.returncode, output="".join(seen))
            return None, (seen[-1].strip() if seen else "no output yet")

        try:
            local_port = wait_until(f"port-forward to {namespace}/{target}:{port}", forwarded,
                                    timeout=ctx.timeout("command"), interval=0.2)
        except CommandError as error:
            raise PlatformError(f"cannot port-forward to {namespace}/{target}: {error.message}",
                                remedy="check that the pod is Running and the kubelet's streaming port is reachable"
                                ) from error
        yield local_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=timeout("process_stop"))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout("process_stop"))
