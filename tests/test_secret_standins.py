"""Secrets the drill cannot have are stood in for with generated values, and every stand-in is disclosed.

The repo below is a small synthetic home-ops layout: a cluster-secrets Secret SOPS-encrypted in
kubernetes/flux/meta, apps under kubernetes/apps/<namespace>/<app>/ks.yaml whose Kustomizations
decrypt with sops and substitute from cluster-secrets, and ExternalSecrets read from a 1Password
ClusterSecretStore.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml

from restoredrill.catalogue import Catalogue, build_catalogue
from restoredrill.drill.gitops import GitOpsDeployment, publishable_tree
from restoredrill.drill.secretstandins import (
    StandinValues,
    external_secret_standin,
    host_like_value,
    secret_standin_files,
    shaped_value,
    substitution_standins,
    variables_used,
    without_decryption,
)
from restoredrill.errors import ConfigError
from restoredrill.platform import Flux
from restoredrill.platform.base import PlatformContext
from restoredrill.yamlio import load_documents

SEED = "run-20260101-abc"
VALUES = StandinValues(seed=SEED)


def enc(marker: str, kind: str = "str") -> str:
    """A value shaped as SOPS writes it (not a real ciphertext)."""
    return f"ENC[AES256_GCM,data:{marker},iv:aXZpdml2aXZpdml2aXZpdg==,tag:dGFndGFndGFn,type:{kind}]"


SOPS_METADATA = f"""\
sops:
  age:
    - recipient: age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq
      enc: |
        -----BEGIN AGE ENCRYPTED FILE-----
        c3RhbmQtaW4gdGVzdCBvbmx5
        -----END AGE ENCRYPTED FILE-----
  lastmodified: "2026-01-01T00:00:00Z"
  mac: {enc("bWFj")}
  encrypted_regex: ^(data|stringData)$
  version: 3.9.4
"""

CLUSTER_SECRETS = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: cluster-secrets
  namespace: flux-system
type: Opaque
stringData:
  SECRET_DOMAIN: {enc("ZXhhbXBsZS5jb20=")}
  SECRET_ACME_EMAIL: {enc("bWVAZXhhbXBsZS5jb20=")}
data:
  SECRET_TUNNEL_TOKEN: {enc("dG9rZW4=")}
{SOPS_METADATA}"""


def kustomization(name: str, path: str, *, target: str | None = None, substitute_from: list[dict[str, Any]] | None
                  = None, decryption: bool = True, depends_on: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"interval": "1h", "path": path, "prune": True,
                            "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}
    if target:
        spec["targetNamespace"] = target
    if depends_on:
        spec["dependsOn"] = [{"name": depends_on}]
    if decryption:
        spec["decryption"] = {"provider": "sops", "secretRef": {"name": "sops-age"}}
    spec["postBuild"] = {"substitute": {"APP": name}}
    if substitute_from is not None:
        spec["postBuild"]["substituteFrom"] = substitute_from
    return {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name, "namespace": "flux-system"}, "spec": spec}


CLUSTER_SECRETS_REF = [{"kind": "Secret", "name": "cluster-secrets"}]

IMMICH_EXTERNAL_SECRET = """\
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: immich
spec:
  secretStoreRef:
    kind: ClusterSecretStore
    name: onepassword
  target:
    name: immich-secret
    template:
      data:
        DB_PASSWORD: "{{ .IMMICH_POSTGRES_PASSWORD }}"
        DB_URL: "postgres://immich:{{ .IMMICH_POSTGRES_PASSWORD }}@immich-rw.media.svc:5432/immich"
        INIT_POSTGRES_SUPER_PASS: "{{ .POSTGRES_SUPER_PASS }}"
        JWT_SECRET: "{{ .IMMICH_JWT_SECRET | b64enc }}"
        REDIS_URL: "redis://:{{ .IMMICH_REDIS_PASSWORD | urlquery }}@dragonfly.database.svc:6379/2"
        SESSION_SECRET: "{{ .IMMICH_SESSION_SECRET | sha256sum }}"
  dataFrom:
    - extract:
        key: immich
    - extract:
        key: cloudnative-pg
"""

CNPG_EXTERNAL_SECRET = """\
apiVersion: external-secrets.io/v1beta1
kind: ExternalSecret
metadata:
  name: cloudnative-pg
spec:
  secretStoreRef:
    kind: ClusterSecretStore
    name: onepassword
  target:
    name: cloudnative-pg-secret
    template:
      data:
        username: postgres
        password: "{{ .password }}"
  data:
    - secretKey: password
      remoteRef:
        key: cloudnative-pg
        property: POSTGRES_SUPER_PASS
"""

IMMICH_CONFIG = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: immich-config
data:
  IMMICH_HOST: photos.${SECRET_DOMAIN}
  APP_NAME: ${APP}
  SMTP_PORT: ${SMTP_PORT:=587}
  API_TOKEN: ${SECRET_IMMICH_API_TOKEN}
  LITERAL: $${NOT_A_VARIABLE}
"""


def dump(*documents: dict[str, Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


def home_ops(root: Path, **overrides: str | None) -> Path:
    """Write the synthetic repo under `root`; `overrides` replace (or, None, remove) files by path."""
    files: dict[str, str | None] = {
        "kubernetes/flux/cluster/ks.yaml": dump(
            kustomization("cluster-meta", "./kubernetes/flux/meta"),
            kustomization("cluster-apps", "./kubernetes/apps", substitute_from=CLUSTER_SECRETS_REF)),
        "kubernetes/flux/meta/kustomization.yaml": "resources:\n  - ./cluster-secrets.sops.yaml\n",
        "kubernetes/flux/meta/cluster-secrets.sops.yaml": CLUSTER_SECRETS,
        "kubernetes/apps/media/kustomization.yaml": "resources:\n  - ./immich/ks.yaml\n",
        "kubernetes/apps/media/immich/ks.yaml": dump(kustomization(
            "immich", "./kubernetes/apps/media/immich/app", target="media", substitute_from=CLUSTER_SECRETS_REF,
            depends_on="cloudnative-pg")),
        "kubernetes/apps/media/immich/app/kustomization.yaml":
            "resources:\n  - ./externalsecret.yaml\n  - ./configmap.yaml\n",
        "kubernetes/apps/media/immich/app/externalsecret.yaml": IMMICH_EXTERNAL_SECRET,
        "kubernetes/apps/media/immich/app/configmap.yaml": IMMICH_CONFIG,
        "kubernetes/apps/database/kustomization.yaml": "resources:\n  - ./cloudnative-pg/ks.yaml\n",
        "kubernetes/apps/database/cloudnative-pg/ks.yaml": dump(kustomization(
            "cloudnative-pg", "./kubernetes/apps/database/cloudnative-pg/app", target="database")),
        "kubernetes/apps/database/cloudnative-pg/app/kustomization.yaml": "resources:\n  - ./externalsecret.yaml\n",
        "kubernetes/apps/database/cloudnative-pg/app/externalsecret.yaml": CNPG_EXTERNAL_SECRET,
        **overrides,
    }
    for name, text in files.items():
        if text is not None:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    return root


def ks_of(catalogue: Catalogue, name: str) -> dict[str, Any]:
    (found,) = [k.manifest.obj for k in catalogue.flux_kustomizations if k.name == name]
    return copy.deepcopy(found)


def document(text: str, name: str = "externalsecret.yaml") -> Any:
    (doc,) = load_documents(Path("/repo") / name, root=Path("/repo"), text=text)
    return doc


def tree_texts(root: Path) -> dict[Path, str]:
    return {p.relative_to(root): p.read_text() for p in root.rglob("*.yaml")}


# ---- generated values --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("SECRET_DOMAIN", "secret-domain.drill.restoredrill.test"),
    ("DB_HOST", "db-host.drill.restoredrill.test"),
    ("HOSTNAME", "hostname.drill.restoredrill.test"),
    ("EXTERNAL_URL", "https://external-url.drill.restoredrill.test"),
    ("webhookUrl", "https://webhookurl.drill.restoredrill.test"),
    ("CLUSTER_FQDN", "cluster-fqdn.drill.restoredrill.test"),
    ("GHOST_API_KEY", None),  # HOST inside a word is not a host
    ("POSTGRES_PASSWORD", None),
])
def test_host_like_names_get_names_under_the_test_domain(name: str, value: str | None) -> None:
    assert host_like_value(name) == value


@pytest.mark.parametrize(("name", "value"), [
    ("TIMEZONE", "Etc/UTC"),  # a CronJob's spec.timeZone refuses anything else
    ("SECRET_TIMEZONE", "Etc/UTC"),
    ("timeZone", "Etc/UTC"),
    ("TZ", "Etc/UTC"),
    ("SECRET_PUBLIC_IP", "192.0.2.169"),  # TEST-NET-1: a Service's loadBalancerIP must be an address
    ("LB_IP_JELLYFIN", "192.0.2.169"),
    ("NODE_CIDR", "192.0.2.0/24"),
    ("SMTP_PORT", "17194"),  # `${SMTP_HOST}:${SMTP_PORT}`
    ("APP_PUID", "1000"),  # a pod's runAsUser
    ("VOLSYNC_PGID", "1000"),
    ("SECRET_NFS_SERVER", "secret-nfs-server.drill.restoredrill.test"),  # `${SECRET_NFS_SERVER}:2049`
    ("SECRET_ACME_EMAIL", "secret-acme-email@drill.restoredrill.test"),
    ("SHIPPING_TOKEN", None),  # IP inside a word is not an address
])
def test_names_of_a_shaped_value_get_a_value_of_that_shape(name: str, value: str | None) -> None:
    assert shaped_value(name, number=16170) == value
    if value is not None:
        assert VALUES.value(("Secret", "cluster-secrets", name), name=name).count(".") == value.count(".")


def test_values_are_the_same_for_the_same_source_in_a_run_and_differ_between_runs() -> None:
    source = ("remote", "immich", "IMMICH_POSTGRES_PASSWORD")
    value = VALUES.value(source, name="IMMICH_POSTGRES_PASSWORD")
    assert StandinValues(seed=SEED).value(source, name="x") == value  # another worker, another cluster
    assert StandinValues(seed="another-run").value(source, name="x") != value
    assert VALUES.value(("remote", "immich", "OTHER"), name="x") != value
    assert len(value) == 43 and set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# ---- ExternalSecrets ---------------------------------------------------------------------------


def test_an_external_secret_becomes_the_secret_its_template_describes() -> None:
    known = {("cloudnative-pg", "POSTGRES_SUPER_PASS")}
    secret, note = external_secret_standin(document(IMMICH_EXTERNAL_SECRET), values=VALUES, known=known)
    password = VALUES.value(("remote", "immich", "IMMICH_POSTGRES_PASSWORD"), name="IMMICH_POSTGRES_PASSWORD")
    super_password = VALUES.value(("remote", "cloudnative-pg", "POSTGRES_SUPER_PASS"), name="POSTGRES_SUPER_PASS")
    # a reference piped through a string function is rendered (the redis URL stays a URL); one through
    # any other function is generated
    jwt = VALUES.value(("remote", "immich", "IMMICH_JWT_SECRET"), name="IMMICH_JWT_SECRET")
    redis = VALUES.value(("remote", "immich", "IMMICH_REDIS_PASSWORD"), name="IMMICH_REDIS_PASSWORD")
    session = VALUES.value(("template", "immich", "SESSION_SECRET"), name="SESSION_SECRET")
    assert len({password, super_password, jwt, redis, session}) == 5
    assert secret == {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "immich-secret"}, "type": "Opaque",
        "stringData": {"DB_PASSWORD": password,
                       "DB_URL": f"postgres://immich:{password}@immich-rw.media.svc:5432/immich",
                       "INIT_POSTGRES_SUPER_PASS": super_password,
                       "JWT_SECRET": base64.b64encode(jwt.encode()).decode(),
                       "REDIS_URL": f"redis://:{redis}@dragonfly.database.svc:6379/2",
                       "SESSION_SECRET": session}}
    assert note == ("ExternalSecret immich of ClusterSecretStore onepassword replaced by Secret immich-secret with "
                    "keys DB_PASSWORD, DB_URL, INIT_POSTGRES_SUPER_PASS, JWT_SECRET, REDIS_URL, SESSION_SECRET and "
                    "generated values (the drill cluster runs no external-secrets operator); template values not "
                    "rendered, generated instead: SESSION_SECRET")


def test_two_external_secrets_of_one_remote_item_and_property_share_its_value() -> None:
    first, _ = external_secret_standin(document(CNPG_EXTERNAL_SECRET), values=VALUES)
    other = {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
             "metadata": {"name": "immich-db", "namespace": "media"},
             "spec": {"data": [{"secretKey": "SUPER", "remoteRef": {"key": "cloudnative-pg",
                                                                    "property": "POSTGRES_SUPER_PASS"}},
                               {"secretKey": "OWN", "remoteRef": {"key": "cloudnative-pg", "property": "OTHER"}},
                               {"secretKey": "WHOLE", "remoteRef": {"key": "cloudnative-pg"}}]}}
    second, note = external_secret_standin(document(dump(other)), values=VALUES)
    assert first["stringData"] == {"username": "postgres", "password": second["stringData"]["SUPER"]}
    assert len(set(second["stringData"].values())) == 3
    # no target: the Secret takes the ExternalSecret's name; its namespace stays
    assert second["metadata"] == {"name": "immich-db", "namespace": "media"}
    assert note.startswith("ExternalSecret immich-db replaced by Secret immich-db with keys SUPER, OWN, WHOLE and "
                           "generated values")


def test_a_name_read_from_several_items_comes_from_the_item_another_external_secret_reads_it_from() -> None:
    """cloudnative-pg's ExternalSecret reads POSTGRES_SUPER_PASS from its one item; immich's reads it from one of
    two (immich first): the tree says which, so the init container's password is the database's."""
    cnpg = CNPG_EXTERNAL_SECRET.replace(
        '  data:\n    - secretKey: password\n      remoteRef:\n        key: cloudnative-pg\n'
        '        property: POSTGRES_SUPER_PASS\n', '  dataFrom:\n    - extract:\n        key: cloudnative-pg\n'
    ).replace('"{{ .password }}"', '"{{ .POSTGRES_SUPER_PASS }}"')
    assert "dataFrom" in cnpg and "POSTGRES_SUPER_PASS" in cnpg
    files = {Path("database/externalsecret.yaml"): cnpg, Path("media/externalsecret.yaml"): IMMICH_EXTERNAL_SECRET}
    changed, _ = secret_standin_files(files, root=Path("/repo"), values=VALUES, sops_standins=True)
    (database,) = yaml.safe_load_all(changed[Path("database/externalsecret.yaml")])
    (media,) = yaml.safe_load_all(changed[Path("media/externalsecret.yaml")])
    assert media["stringData"]["INIT_POSTGRES_SUPER_PASS"] == database["stringData"]["password"]
    # and a name no other ExternalSecret reads comes from the first item, the app's own
    assert media["stringData"]["DB_PASSWORD"] == VALUES.value(("remote", "immich", "IMMICH_POSTGRES_PASSWORD"),
                                                              name="IMMICH_POSTGRES_PASSWORD")


def test_a_key_rewritten_from_another_item_comes_from_that_item() -> None:
    """A dashboard reads two apps' items that both hold API_KEY and renames the second's: each of its keys
    is the key that app's own ExternalSecret reads, not another item's."""
    app = """\
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  target:
    template:
      data:
        {name_upper}__AUTH__APIKEY: "{{{{ .API_KEY }}}}"
  dataFrom:
    - extract: {{key: {name}}}
"""
    dashboard = """\
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: dashboard}
spec:
  target:
    template:
      data:
        SONARR_KEY: "{{ .API_KEY }}"
        SONARR_UHD_KEY: "{{ .UHD_API_KEY }}"
  dataFrom:
    - extract: {key: sonarr}
    - extract: {key: sonarr-uhd}
      rewrite:
        - regexp: {source: "^API_KEY$", target: UHD_API_KEY}
"""
    files = {Path("sonarr.yaml"): app.format(name="sonarr", name_upper="SONARR"),
             Path("sonarr-uhd.yaml"): app.format(name="sonarr-uhd", name_upper="SONARR_UHD"),
             Path("dashboard.yaml"): dashboard}
    changed, _ = secret_standin_files(files, root=Path("/repo"), values=VALUES, sops_standins=True)
    (sonarr,), (uhd,), (board,) = (list(yaml.safe_load_all(changed[Path(name)]))
                                   for name in ("sonarr.yaml", "sonarr-uhd.yaml", "dashboard.yaml"))
    assert board["stringData"]["SONARR_KEY"] == sonarr["stringData"]["SONARR__AUTH__APIKEY"]
    assert board["stringData"]["SONARR_UHD_KEY"] == uhd["stringData"]["SONARR_UHD__AUTH__APIKEY"]
    assert board["stringData"]["SONARR_KEY"] != board["stringData"]["SONARR_UHD_KEY"]


def test_a_key_found_by_find_is_the_stores_secret_of_that_name() -> None:
    """Stores such as Doppler keep one secret per name: an app's init container finds the database's
    superuser password by name, as the database's own ExternalSecret does, and both get one value."""
    database = """\
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: postgres-superuser}
spec:
  target:
    template:
      data:
        password: "{{ .PG__SUPER_PASS }}"
  dataFrom:
    - find: {path: PG__}
"""
    app = """\
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: wiki}
spec:
  target:
    template:
      data:
        WIKI_DB_PASS: "{{ .WIKI__DB_PASS }}"
        INIT_POSTGRES_SUPER_PASS: "{{ .PG__SUPER_PASS }}"
        BACKUP_PASS: "{{ .BACKUP_PASS }}"
  dataFrom:
    - find: {name: {regexp: "^WIKI__"}}
    - find: {name: {regexp: "^PG__"}}
  data:
    - secretKey: BACKUP_PASS
      remoteRef: {key: PG__SUPER_PASS}
"""
    files = {Path("database.yaml"): database, Path("wiki.yaml"): app}
    changed, _ = secret_standin_files(files, root=Path("/repo"), values=VALUES, sops_standins=True)
    (db,), (wiki,) = (list(yaml.safe_load_all(changed[Path(name)])) for name in ("database.yaml", "wiki.yaml"))
    assert wiki["stringData"]["INIT_POSTGRES_SUPER_PASS"] == db["stringData"]["password"]
    assert wiki["stringData"]["BACKUP_PASS"] == db["stringData"]["password"]
    assert wiki["stringData"]["WIKI_DB_PASS"] not in (db["stringData"]["password"], "")


def test_data_from_without_a_template_has_no_keys_to_generate_and_says_so() -> None:
    text = """\
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: paperless, namespace: documents}
spec:
  secretStoreRef: {kind: ClusterSecretStore, name: onepassword}
  dataFrom:
    - extract: {key: paperless}
    - find: {name: {regexp: "^PAPERLESS_"}}
  data:
    - secretKey: PAPERLESS_ADMIN_USER
      remoteRef: {key: paperless, property: ADMIN_USER}
"""
    secret, note = external_secret_standin(document(text), values=VALUES)
    assert secret["stringData"] == {"PAPERLESS_ADMIN_USER": VALUES.value(("remote", "paperless", "ADMIN_USER"),
                                                                         name="ADMIN_USER")}
    assert note.endswith("; the keys of dataFrom extract paperless, find only the secret store knows: none generated")


def test_a_docker_config_secret_stays_valid_json() -> None:
    text = """\
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: ghcr}
spec:
  target:
    template:
      type: kubernetes.io/dockerconfigjson
      metadata:
        labels: {app.kubernetes.io/name: ghcr}
      data:
        .dockerconfigjson: '{"auths":{"ghcr.io":{"auth":"{{ printf "%s:%s" .user .token | b64enc }}"}}}'
  dataFrom:
    - extract: {key: ghcr}
"""
    secret, note = external_secret_standin(document(text), values=VALUES)
    assert secret == {"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": "ghcr", "labels": {"app.kubernetes.io/name": "ghcr"}},
                      "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": '{"auths":{}}'}}
    assert "generated instead: .dockerconfigjson (an empty docker config)" in note


@pytest.mark.parametrize(("spec", "field", "remedy"), [
    ("data:\n    - remoteRef: {key: immich}\n", "externalsecret.yaml:7: ExternalSecret immich: spec.data[0].secretKey "
     "is missing", "give every spec.data item a secretKey"),
    ("data:\n    - secretKey: A\n      remoteRef: {property: B}\n", "ExternalSecret immich: spec.data[0].remoteRef.key "
     "is missing", "give every spec.data item a remoteRef.key"),
    ("dataFrom:\n    - extract: {}\n", "ExternalSecret immich: spec.dataFrom[0] names no extract.key, find or "
     "sourceRef.generatorRef", "spec.dataFrom items with extract.key"),
    ("target:\n    template:\n      data: [a, b]\n", "ExternalSecret immich: spec.target.template.data must be a "
     "mapping", "write spec.target.template.data as"),
    ("data: {secretKey: A}\n", "ExternalSecret immich: spec.data must be a list", "spec.data items with secretKey"),
])
def test_a_malformed_external_secret_names_the_file_the_field_and_the_fix(spec: str, field: str,
                                                                           remedy: str) -> None:
    text = f"apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: immich\nspec:\n  {spec}"
    with pytest.raises(ConfigError) as raised:
        external_secret_standin(document(text), values=VALUES)
    assert field in raised.value.message
    assert raised.value.message.startswith("externalsecret.yaml:")
    assert raised.value.remedy is not None and remedy in raised.value.remedy


# ---- SOPS without the age key ------------------------------------------------------------------


def test_a_sops_secret_without_the_key_keeps_its_keys_and_gets_generated_values() -> None:
    path = Path("kubernetes/flux/meta/cluster-secrets.sops.yaml")
    changed, notes = secret_standin_files({path: CLUSTER_SECRETS}, root=Path("/repo"), values=VALUES,
                                          sops_standins=True)
    (secret,) = yaml.safe_load_all(changed[path])
    token = VALUES.value(("Secret", "cluster-secrets", "SECRET_TUNNEL_TOKEN"), name="SECRET_TUNNEL_TOKEN")
    assert secret == {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cluster-secrets", "namespace": "flux-system"},
        "type": "Opaque",
        "stringData": {"SECRET_DOMAIN": "secret-domain.drill.restoredrill.test",
                       "SECRET_ACME_EMAIL": VALUES.value(("Secret", "cluster-secrets", "SECRET_ACME_EMAIL"),
                                                         name="SECRET_ACME_EMAIL")},
        "data": {"SECRET_TUNNEL_TOKEN": base64.b64encode(token.encode()).decode()}}
    assert "ENC[" not in changed[path] and "sops" not in secret
    assert notes == [f"{path}: Secret cluster-secrets: SOPS-encrypted and no age key was given (--sops-age-key): "
                     "served without its sops metadata, generated values for stringData.SECRET_DOMAIN, "
                     "stringData.SECRET_ACME_EMAIL, data.SECRET_TUNNEL_TOKEN"]


def test_typed_and_unencrypted_values_of_a_sops_document() -> None:
    text = f"""\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: gatus}}
spec:
  values:
    replicas: {enc("Mg==", "int")}
    enabled: {enc("dHJ1ZQ==", "bool")}
    plain: kept as written
    endpoints:
      - url: {enc("aHR0cHM6Ly9leGFtcGxlLmNvbQ==")}
{SOPS_METADATA}"""
    path = Path("apps/gatus.sops.yaml")
    changed, _ = secret_standin_files({path: text}, root=Path("/repo"), values=VALUES, sops_standins=True)
    (release,) = yaml.safe_load_all(changed[path])
    values = release["spec"]["values"]
    assert isinstance(values["replicas"], int) and values["enabled"] is True and values["plain"] == "kept as written"
    assert values["endpoints"] == [{"url": "https://url.drill.restoredrill.test"}]


def test_with_the_age_key_sops_files_are_left_byte_for_byte() -> None:
    path = Path("kubernetes/flux/meta/cluster-secrets.sops.yaml")
    # a SOPS file beside an ExternalSecret too: its MAC covers the bytes, so nothing of it is rewritten
    both = Path("kubernetes/apps/media/immich/app/secrets.sops.yaml")
    files = {path: CLUSTER_SECRETS, both: f"{CNPG_EXTERNAL_SECRET}---\n{CLUSTER_SECRETS}"}
    assert secret_standin_files(files, root=Path("/repo"), values=VALUES, sops_standins=False) == ({}, [])


def test_a_file_that_only_mentions_them_is_not_parsed() -> None:
    files = {Path("charts/values.yaml"): "# kind: ExternalSecret is made by the chart\nsecret: {{ .Values.x }}\n",
             Path("docs/sops.yaml"): "note: the sops: key is added by sops\n"}
    assert secret_standin_files(files, root=Path("/repo"), values=VALUES, sops_standins=True) == ({}, [])


# ---- the published tree ------------------------------------------------------------------------


def test_the_published_tree_serves_stand_ins_and_says_so(tmp_path: Path) -> None:
    repo = home_ops(tmp_path / "repo")
    target = tmp_path / "published"
    notes = publishable_tree(repo, target, nfs=tmp_path / "nfs", standin_values=VALUES, sops_standins=True)
    assert notes[0].endswith("is not a git checkout: every file under it is published to the drill's git server")
    assert [note.partition(":")[0] for note in notes[1:]] == [
        "kubernetes/apps/database/cloudnative-pg/app/externalsecret.yaml",
        "kubernetes/apps/media/immich/app/externalsecret.yaml",
        "kubernetes/flux/meta/cluster-secrets.sops.yaml"]
    (cnpg,) = yaml.safe_load_all((target / "kubernetes/apps/database/cloudnative-pg/app/externalsecret.yaml")
                                 .read_text())
    (immich,) = yaml.safe_load_all((target / "kubernetes/apps/media/immich/app/externalsecret.yaml").read_text())
    # immich reads POSTGRES_SUPER_PASS from one of two items; the tree says which holds it, so both agree
    assert immich["kind"] == cnpg["kind"] == "Secret"
    assert immich["stringData"]["INIT_POSTGRES_SUPER_PASS"] == cnpg["stringData"]["password"]
    (secret,) = yaml.safe_load_all((target / "kubernetes/flux/meta/cluster-secrets.sops.yaml").read_text())
    assert secret["stringData"]["SECRET_DOMAIN"] == "secret-domain.drill.restoredrill.test"
    unchanged = {p for p, text in tree_texts(repo).items() if (target / p).read_text() == text}
    assert unchanged == set(tree_texts(repo)) - {
        Path("kubernetes/apps/database/cloudnative-pg/app/externalsecret.yaml"),
        Path("kubernetes/apps/media/immich/app/externalsecret.yaml"),
        Path("kubernetes/flux/meta/cluster-secrets.sops.yaml")}


def test_a_placeholder_for_a_key_is_published_and_a_key_is_refused(tmp_path: Path) -> None:
    """A sample config's commented-out key slot and a vault layout's `AGE-SECRET-KEY-1...` hold no key: the
    tree is published. Key material after the marker, commented out or JSON-escaped, is still refused."""
    repo = home_ops(tmp_path / "repo", **{
        "config.sample.yaml": "# deploy_key: |\n#   -----BEGIN OPENSSH PRIVATE KEY-----\n#   ...\n"
                              "#   -----END OPENSSH PRIVATE KEY-----\n",
        "docs/vault.md": "Fields:\n- private_key: AGE-SECRET-KEY-1...\n- public_key: age1...\n"})
    publishable_tree(repo, tmp_path / "published", nfs=tmp_path / "nfs", standin_values=VALUES, sops_standins=True)
    assert (tmp_path / "published" / "docs/vault.md").is_file()
    for name, text, what in [
        ("config.yaml", "# deploy_key: |\n#   -----BEGIN OPENSSH PRIVATE KEY-----\n#   b3BlbnNzaC1rZXktdjE\n",
         "an SSH private key"),
        ("gcp.json", '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBg\\n"}', "a private key (PEM)"),
        ("docs/key.md", "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQY\n",
         "an age secret key")]:
        leaky = home_ops(tmp_path / name.replace("/", "-"), **{name: text})
        with pytest.raises(ConfigError, match=f"holds {re.escape(what)} in plain text"):
            publishable_tree(leaky, tmp_path / f"out-{name.replace('/', '-')}", nfs=tmp_path / "nfs")


def test_with_the_age_key_only_external_secrets_are_stood_in_for(tmp_path: Path) -> None:
    repo = home_ops(tmp_path / "repo")
    target = tmp_path / "published"
    notes = publishable_tree(repo, target, nfs=tmp_path / "nfs", standin_values=VALUES, sops_standins=False)
    assert not any("SOPS" in note for note in notes)
    sops = "kubernetes/flux/meta/cluster-secrets.sops.yaml"
    assert (target / sops).read_bytes() == (repo / sops).read_bytes()
    assert "kind: Secret" in (target / "kubernetes/apps/media/immich/app/externalsecret.yaml").read_text()


# ---- the Kustomizations the drill applies ------------------------------------------------------


def test_decryption_is_dropped_and_disclosed() -> None:
    body = kustomization("immich", "./app")
    before = copy.deepcopy(body)
    dropped, note = without_decryption(body)
    assert "decryption" not in dropped["spec"] and dropped["spec"]["path"] == "./app"
    assert body == before  # the plan's own dict is left alone
    assert note == ("Kustomization flux-system/immich: spec.decryption (sops, Secret sops-age) dropped: no age key "
                    "was given, so the repo's SOPS files are served with generated values and nothing is left to "
                    "decrypt")
    assert without_decryption(kustomization("immich", "./app", decryption=False))[1] is None


def test_variables_used_with_their_defaults() -> None:
    documents = [{"data": {"a": "${ONE} and ${TWO:=2}", "b": "$${ESCAPED}", "c": "${THREE:=x}", "${KEY}": "v"}},
                 {"data": {"d": "${THREE}"}},
                 {"metadata": {"annotations": {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}},
                  "data": {"e": "${SKIPPED}"}}]
    assert variables_used(documents) == {"ONE": None, "TWO": "2", "THREE": None, "KEY": None}


def test_variables_used_through_flux_functions_need_a_value() -> None:
    """fluxcd/pkg envsubst's bash-like functions: `${SECRET_DOMAIN/./-}` (a certificate's secret name) needs
    SECRET_DOMAIN as much as `${SECRET_DOMAIN}` does; `:-`, `-` and `=` give defaults, and a default may use a
    variable of its own. A label disables substitution as the annotation does."""
    documents = [{"spec": {"secretName": "${SECRET_DOMAIN/./-}-production-tls", "short": "${SHA:0:7}",
                           "lower": "${ENV,,}", "length": "${#TOKEN}", "claim": "${VOLSYNC_CLAIM:-${APP}}",
                           "modes": ["${VOLSYNC_ACCESSMODES:-ReadWriteOnce}"], "unset": "${UNSET-x}",
                           "equals": "${EQUALS=y}", "escaped": "$${SECRET_DOMAIN/./-}"}},
                 {"metadata": {"labels": {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}},
                  "data": {"script": "${SKIPPED/./-}"}}]
    assert variables_used(documents) == {"SECRET_DOMAIN": None, "SHA": None, "ENV": None, "TOKEN": None,
                                         "VOLSYNC_CLAIM": "", "APP": None, "VOLSYNC_ACCESSMODES": "ReadWriteOnce",
                                         "UNSET": "x", "EQUALS": "y"}


def test_a_variable_used_only_through_a_function_gets_a_value(tmp_path: Path) -> None:
    certificate = ("apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata:\n  name: wildcard\nspec:\n"
                   "  secretName: ${SECRET_DOMAIN/./-}-production-tls\n  dnsNames: ['*.${SECRET_DOMAIN}']\n")
    config = IMMICH_CONFIG.replace("photos.${SECRET_DOMAIN}", "photos.${SECRET_DOMAIN/./-}")
    catalogue = build_catalogue(home_ops(tmp_path / "repo", **{
        "kubernetes/apps/media/immich/app/configmap.yaml": config.replace("${SECRET_IMMICH_API_TOKEN}", "x"),
        "kubernetes/apps/media/immich/app/certificate.yaml": certificate,
        "kubernetes/apps/media/immich/app/kustomization.yaml":
            "resources:\n  - ./externalsecret.yaml\n  - ./configmap.yaml\n"}))
    body, _ = substitution_standins(ks_of(catalogue, "immich"), manifests=catalogue.manifests, values=VALUES,
                                    sops_standins=True)
    assert body["spec"]["postBuild"]["substitute"] == {"SECRET_DOMAIN": "secret-domain.drill.restoredrill.test",
                                                        "APP": "immich"}


def test_substitute_from_a_sops_secret_without_the_key_becomes_generated_substitutions(tmp_path: Path) -> None:
    catalogue = build_catalogue(home_ops(tmp_path / "repo"))
    immich = ks_of(catalogue, "immich")
    body, notes = substitution_standins(immich, manifests=catalogue.manifests, values=VALUES, sops_standins=True)
    token = VALUES.value(("Secret", "cluster-secrets", "SECRET_IMMICH_API_TOKEN"), name="SECRET_IMMICH_API_TOKEN")
    # SMTP_PORT keeps its default; APP was given; NOT_A_VARIABLE is escaped
    assert body["spec"]["postBuild"] == {"substitute": {"SECRET_DOMAIN": "secret-domain.drill.restoredrill.test",
                                                        "SECRET_IMMICH_API_TOKEN": token, "APP": "immich"}}
    assert {k: v for k, v in body["spec"].items() if k != "postBuild"} == {
        k: v for k, v in immich["spec"].items() if k != "postBuild"}
    assert notes == [
        "Kustomization flux-system/immich: postBuild.substituteFrom Secret cluster-secrets (SOPS-encrypted in "
        "kubernetes/flux/meta/cluster-secrets.sops.yaml and no age key was given) dropped; generated values in "
        "postBuild.substitute for the variables its manifests use: SECRET_DOMAIN=secret-domain.drill.restoredrill.test"
        ", SECRET_IMMICH_API_TOKEN=(generated)"]
    # the same value the published cluster-secrets stand-in holds for a key it has
    sops = Path("kubernetes/flux/meta/cluster-secrets.sops.yaml")
    changed, _ = secret_standin_files({sops: CLUSTER_SECRETS}, root=Path("/"), values=VALUES, sops_standins=True)
    (secret,) = yaml.safe_load_all(changed[sops])
    assert secret["stringData"]["SECRET_DOMAIN"] == body["spec"]["postBuild"]["substitute"]["SECRET_DOMAIN"]


def test_with_the_age_key_substitute_from_is_left_as_written(tmp_path: Path) -> None:
    catalogue = build_catalogue(home_ops(tmp_path / "repo"))
    immich = ks_of(catalogue, "immich")
    assert substitution_standins(immich, manifests=catalogue.manifests, values=VALUES,
                                 sops_standins=False) == (immich, [])


def test_substitute_from_an_external_secret_target_or_a_missing_object(tmp_path: Path) -> None:
    cluster_secrets = """\
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: cluster-secrets, namespace: flux-system}
spec:
  secretStoreRef: {kind: ClusterSecretStore, name: onepassword}
  data:
    - secretKey: SECRET_IMMICH_API_TOKEN
      remoteRef: {key: immich, property: API_TOKEN}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cluster-settings, namespace: flux-system}
data: {TIMEZONE: Europe/Paris}
"""
    refs: list[dict[str, Any]] = [{"kind": "ConfigMap", "name": "cluster-settings"},
                                  {"kind": "Secret", "name": "cluster-secrets"},
                                  {"kind": "Secret", "name": "made-by-hand", "optional": True}]
    repo = home_ops(tmp_path / "repo", **{
        "kubernetes/flux/meta/cluster-secrets.sops.yaml": None,
        "kubernetes/flux/meta/kustomization.yaml": "resources:\n  - ./cluster-secrets.yaml\n",
        "kubernetes/flux/meta/cluster-secrets.yaml": cluster_secrets,
        "kubernetes/apps/media/immich/ks.yaml": dump(kustomization(
            "immich", "./kubernetes/apps/media/immich/app", target="media", substitute_from=refs, decryption=False)),
        "kubernetes/apps/media/immich/app/configmap.yaml": IMMICH_CONFIG + "  TZ: ${TIMEZONE}\n  X: ${BY_HAND}\n"})
    catalogue = build_catalogue(repo)
    immich = ks_of(catalogue, "immich")
    body, (inlined, note) = substitution_standins(immich, manifests=catalogue.manifests, values=VALUES,
                                                  sops_standins=False)
    post_build = body["spec"]["postBuild"]
    # The ConfigMap the repo holds in clear is applied by the cluster's own Kustomization, not one the
    # drill deploys (cypr0/k8s-cluster's cluster-settings): its values are inlined, as they are.
    assert "substituteFrom" not in post_build
    assert inlined == ("Kustomization flux-system/immich: postBuild.substituteFrom ConfigMap cluster-settings (in "
                       "kubernetes/flux/meta/cluster-secrets.yaml, applied by Kustomization cluster-meta) inlined in "
                       "postBuild.substitute with the repo's own values of TIMEZONE"), inlined
    published, _ = secret_standin_files(tree_texts(repo), root=repo, values=VALUES, sops_standins=False)
    (secret, _config) = yaml.safe_load_all(published[Path("kubernetes/flux/meta/cluster-secrets.yaml")])
    assert post_build["substitute"] == {
        "BY_HAND": VALUES.value(("Secret", "made-by-hand", "BY_HAND"), name="BY_HAND"),
        "SECRET_DOMAIN": "secret-domain.drill.restoredrill.test",
        # the ExternalSecret's own stand-in value, as the published cluster-secrets Secret holds it
        "SECRET_IMMICH_API_TOKEN": secret["stringData"]["SECRET_IMMICH_API_TOKEN"],
        "TIMEZONE": "Europe/Paris",
        "APP": "immich"}
    assert note.startswith("Kustomization flux-system/immich: postBuild.substituteFrom Secret cluster-secrets (made "
                           "by ExternalSecret cluster-secrets in kubernetes/flux/meta/cluster-secrets.yaml; the drill "
                           "cluster runs no external-secrets operator); Secret made-by-hand (not in the repo) dropped")


@pytest.mark.parametrize("entries", [{"kind": "Secret"}, [{"kind": "Opaque", "name": "x"}], ["cluster-secrets"]])
def test_a_malformed_substitute_from_names_the_kustomization_and_the_fix(entries: Any) -> None:
    body = kustomization("immich", "./app")
    body["spec"]["postBuild"]["substituteFrom"] = entries
    with pytest.raises(ConfigError) as raised:
        substitution_standins(body, manifests=(), values=VALUES, sops_standins=True)
    assert raised.value.message.startswith("Kustomization flux-system/immich: spec.postBuild.substituteFrom")
    assert raised.value.remedy == ("write spec.postBuild.substituteFrom as a list of {kind: ConfigMap or Secret, "
                                   "name: NAME}")


# ---- wired into the deployment -----------------------------------------------------------------


class RecordingContext:
    """What the deploy path asks of the cluster: its provider, objects applied (recorded), dependencies."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.cluster = SimpleNamespace(provider="kind", offline=False)

    def apply(self, bodies: list[dict[str, Any]]) -> None:
        self.applied += copy.deepcopy(bodies)

    def get_object(self, *args: str) -> dict[str, Any]:
        return {"kind": "Kustomization"}  # every dependency is there: no stand-in Kustomization


def deployment(catalogue: Catalogue, *, key: Path | None) -> tuple[GitOpsDeployment, RecordingContext]:
    ctx = RecordingContext()
    flux = SimpleNamespace(namespace="flux-system")
    return GitOpsDeployment(ctx=cast(PlatformContext, ctx), flux=cast(Flux, flux), catalogue=catalogue,
                            run_id=SEED, worker_id="gw0", sops_age_key=key), ctx


class RecordingFlux:
    """Flux as publish() uses it: the tree it is given is read before the temporary folder goes."""

    namespace = "flux-system"

    def __init__(self) -> None:
        self.published: dict[Path, str] = {}

    def publish_repository(self, tree: Path, *, repo: str) -> str:
        self.published = tree_texts(tree)
        return f"http://git/{repo}.git"

    def create_git_repository(self, *, name: str, url: str) -> None:
        pass

    def request_reconcile(self, name: str, *, plural: str = "kustomizations") -> str:
        return "now"

    def wait_for_source_ready(self, name: str) -> None:
        pass


@pytest.mark.parametrize("with_key", [False, True])
def test_publish_serves_the_stand_ins_and_lists_them(tmp_path: Path, with_key: bool) -> None:
    repo = home_ops(tmp_path / "repo")
    catalogue = build_catalogue(repo)
    key = tmp_path / "age.agekey"
    key.write_text("# drill key\n")
    gitops, ctx = deployment(catalogue, key=key if with_key else None)
    flux = RecordingFlux()
    gitops.flux = cast(Flux, flux)
    gitops.publish()
    sops = Path("kubernetes/flux/meta/cluster-secrets.sops.yaml")
    immich = Path("kubernetes/apps/media/immich/app/externalsecret.yaml")
    assert yaml.safe_load(flux.published[immich])["kind"] == "Secret"
    assert any(note.startswith(f"{immich}: ExternalSecret immich") for note in gitops.standins)
    if with_key:
        assert flux.published[sops] == (repo / sops).read_text()
        assert not any("SOPS" in note for note in gitops.standins)
        # the folder that applies cluster-secrets alone for immich's substituteFrom (cluster-meta is not drilled)
        alone = Path("restoredrill-standins/substitute/secret-cluster-secrets")
        assert flux.published[alone / sops.name] == (repo / sops).read_text()
        assert yaml.safe_load(flux.published[alone / "kustomization.yaml"])["resources"] == [f"./{sops.name}"]
        assert [body["metadata"]["name"] for body in ctx.applied] == ["sops-age"]
    else:
        assert "ENC[" not in flux.published[sops]
        assert any(note.startswith(f"{sops}: Secret cluster-secrets: SOPS-encrypted") for note in gitops.standins)
        assert ctx.applied == []  # no key Secret
        # what the Kustomizations will lose is listed before any drill copies the list into its record
        assert "Kustomization flux-system/immich: spec.decryption (sops, Secret sops-age) dropped" in "\n".join(
            gitops.standins)
        assert "Kustomization flux-system/immich: postBuild.substituteFrom Secret cluster-secrets" in "\n".join(
            gitops.standins)


def test_without_the_key_the_drill_applies_kustomizations_it_can_reconcile(tmp_path: Path) -> None:
    catalogue = build_catalogue(home_ops(tmp_path / "repo"))
    gitops, ctx = deployment(catalogue, key=None)
    immich = ks_of(catalogue, "immich")
    gitops.apply_suspended([immich])
    gitops.apply_suspended([immich])  # the full-cluster recovery applies them again: one note each
    (applied, _) = ctx.applied
    assert applied["spec"]["suspend"] is True and "decryption" not in applied["spec"]
    assert "substituteFrom" not in applied["spec"]["postBuild"]
    assert applied["spec"]["postBuild"]["substitute"]["SECRET_DOMAIN"] == "secret-domain.drill.restoredrill.test"
    assert [note.partition(":")[0] for note in gitops.standins] == ["Kustomization flux-system/immich"] * 2
    assert "decryption" in immich["spec"]  # the plan's dict is not changed
    gitops._sops_secrets()  # no key: no key Secret, no error, and it says so
    assert ctx.applied == [applied, applied]
    assert gitops.standins[-1].startswith("no age key was given (--sops-age-key): the decryption Secrets "
                                          "['sops-age'] are not created")


def test_with_the_key_the_kustomizations_and_the_key_secret_are_as_before(tmp_path: Path) -> None:
    catalogue = build_catalogue(home_ops(tmp_path / "repo"))
    key = tmp_path / "age.agekey"
    key.write_text("# drill key\n")
    gitops, ctx = deployment(catalogue, key=key)
    waited: list[tuple[str, str]] = []
    gitops.flux = cast(Flux, SimpleNamespace(namespace="flux-system", in_namespace=lambda ns: SimpleNamespace(
        wait_for_kustomization_ready=lambda name: waited.append((ns, name)))))
    immich = ks_of(catalogue, "immich")
    gitops.apply_suspended([immich])
    # cluster-secrets, which immich substitutes from, is applied in production by cluster-meta, which
    # the drill does not deploy: it is applied alone first, decrypted with the key, and disclosed.
    helper, applied = ctx.applied
    assert applied == {**immich, "spec": {**immich["spec"], "suspend": True}}
    assert helper["metadata"]["name"] == "restoredrill-substitute-secret-cluster-secrets"
    assert helper["spec"]["decryption"] == {"provider": "sops", "secretRef": {"name": "sops-age"}}
    assert helper["spec"]["path"] == "./restoredrill-standins/substitute/secret-cluster-secrets"
    assert helper["spec"]["targetNamespace"] == "flux-system"
    assert waited == [("flux-system", "restoredrill-substitute-secret-cluster-secrets")]
    (note,) = gitops.standins
    assert note.startswith("Secret flux-system/cluster-secrets (postBuild.substituteFrom of Kustomization "
                           "flux-system/immich): SOPS-encrypted in kubernetes/flux/meta/cluster-secrets.sops.yaml, "
                           "applied in production by Kustomization cluster-meta")
    ctx.applied.clear()
    gitops._sops_secrets()
    assert ctx.applied[-1]["kind"] == "Secret" and ctx.applied[-1]["metadata"]["name"] == "sops-age"
    assert ctx.applied[-1]["stringData"] == {"age.agekey": "# drill key\n"}
    gitops.sops_age_key = tmp_path / "missing.agekey"
    with pytest.raises(ConfigError, match=r"the age key given \(.*missing.agekey\) does not exist"):
        gitops._sops_secrets()
