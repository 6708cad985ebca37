"""Certificates and kubeconfigs of the local cluster, made with the `openssl` CLI.

Kept apart from the process management so the generated configuration can be unit-tested without
a cluster. Keys are ECDSA P-256 (fast to generate on 2 cores); the service-account key is RSA,
which every Kubernetes client library verifies.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from restoredrill.errors import CommandError, MissingToolError

CERT_DAYS = 3650


@dataclass(frozen=True)
class CertRequest:
    """One leaf certificate: who it names and what it may be used for."""

    name: str  # file stem in the pki dir
    common_name: str
    organization: str | None = None
    server: bool = False
    client: bool = False
    sans: tuple[str, ...] = ()


def san_entry(value: str) -> str:
    """`IP:10.0.0.1` for an address, `DNS:name` for anything else."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"DNS:{value}"
    return f"IP:{value}"


def extension_config(request: CertRequest) -> str:
    """The `openssl x509 -extfile` text for `request`."""
    usages = [usage for usage, wanted in (("serverAuth", request.server), ("clientAuth", request.client)) if wanted]
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
    ]
    if request.sans:
        lines.append("subjectAltName=" + ",".join(san_entry(value) for value in request.sans))
    return "\n".join(lines) + "\n"


def subject(request: CertRequest) -> str:
    return (f"/O={request.organization}" if request.organization else "") + f"/CN={request.common_name}"


def cluster_cert_requests(*, node_name: str, node_ip: str, api_service_ip: str) -> list[CertRequest]:
    """Every certificate a single-node cluster needs (as in hack/local-up-cluster.sh)."""
    return [
        CertRequest(
            "apiserver", "kube-apiserver", server=True,
            sans=(
                "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local", "localhost", "127.0.0.1", node_ip, api_service_ip,
            ),
        ),
        CertRequest("admin", "kubernetes-admin", "system:masters", client=True),
        CertRequest("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters", client=True),
        CertRequest("controller-manager", "system:kube-controller-manager", client=True),
        CertRequest("scheduler", "system:kube-scheduler", client=True),
        CertRequest("kube-proxy", "system:kube-proxy", client=True),
        CertRequest("kubelet", f"system:node:{node_name}", "system:nodes", client=True),
        CertRequest("kubelet-serving", node_name, server=True, sans=(node_name, node_ip, "127.0.0.1")),
    ]


def kubeconfig(*, server: str, ca: Path, cert: Path, key: Path, user: str, cluster: str) -> str:
    """A kubeconfig naming files (not embedding them), with one context called `cluster`."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }
    return yaml.safe_dump(document, sort_keys=False)


class Pki:
    """Generates the CA, leaf certificates and service-account keys into one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, stem: str, suffix: str) -> Path:
        return self.dir / f"{stem}.{suffix}"

    @property
    def ca(self) -> Path:
        return self.path("ca", "crt")

    def _openssl(self, *args: str) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise MissingToolError("openssl", remedy="run `restoredrill toolchain` (installs Debian's openssl)")
        command = [openssl, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.dir)
        if result.returncode != 0:
            raise CommandError(command, returncode=result.returncode, output=result.stdout + result.stderr)

    def ensure(self, requests: list[CertRequest]) -> None:
        """Create whatever is missing; existing files are kept so a kept cluster stays valid."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        if not self.ca.exists():
            self._openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(CERT_DAYS),
                          "-subj", "/CN=restoredrill-local-ca")
        for request in requests:
            if self.path(request.name, "crt").exists():
                continue
            ext = self.path(request.name, "ext")
            ext.write_text(extension_config(request))
            self._openssl("req", "-new", *ec, "-keyout", f"{request.name}.key", "-out", f"{request.name}.csr",
                          "-subj", subject(request))
            self._openssl("x509", "-req", "-in", f"{request.name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                          "-set_serial", str(abs(hash((request.name, self.dir))) % 10**15 + 2),
                          "-days", str(CERT_DAYS), "-extfile", ext.name, "-out", f"{request.name}.crt")
        if not self.path("sa", "key").exists():
            self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key")
            self._openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")
