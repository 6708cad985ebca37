"""Stand-ins for the secrets a drill cluster cannot or should not have, each disclosed.

A real GitOps repo holds secrets only production can open: ExternalSecrets read from a store the
drill cluster cannot reach (and runs no external-secrets operator for), SOPS files when the drill
is given no age key, and Flux `postBuild.substituteFrom` Secrets made by either. Each is replaced
by a plain object with generated values, and every replacement returns a note for the drill's
report, so a drill that passed on stand-in secrets says so.

Values are derived from a per-run seed and where the secret comes from (an HMAC), not drawn at
random per call: two ExternalSecrets naming the same remote item and property get the same value,
as they do in production, and every xdist worker (they publish to one git server) and the
full-cluster recovery's second cluster serve the same tree, so a restored Secret still equals the
one Flux applies. Host-like names (DOMAIN, HOST, URL, FQDN, SERVER) get names under
`drill.restoredrill.test` (RFC 2606 `.test`), which resolves nowhere; names of other values with a
shape (a time zone, a port, an IP address, a user id, an e-mail address) get one of that shape.

Everything here is pure: documents and file text in, documents, text and notes out.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from restoredrill.catalogue import Manifest, dig
from restoredrill.errors import ConfigError
from restoredrill.yamlio import Document, FieldPath, load_documents

TEST_DOMAIN = "drill.restoredrill.test"
EXTERNAL_SECRET_API_VERSIONS = frozenset({"external-secrets.io/v1beta1", "external-secrets.io/v1"})
SUBSTITUTE_DISABLED = "kustomize.toolkit.fluxcd.io/substitute"
# Words of a name that make its value a host name or URL.
_HOST_WORDS = frozenset({"DOMAIN", "HOST", "HOSTNAME", "URL", "FQDN", "SERVER"})
# Words of a name whose value a random string would break where it lands (a CronJob's timeZone, a
# Service's loadBalancerIP, a pod's runAsUser, host:port): each gets a value of its shape, the first
# listed winning. Addresses are in TEST-NET-1 (RFC 5737), which routes nowhere.
_SHAPED_WORDS: tuple[tuple[frozenset[str], Callable[[str, int], str]], ...] = (
    (frozenset({"PORT"}), lambda name, n: str(1024 + n % 64000)),
    (frozenset({"TIMEZONE", "TZ"}), lambda name, n: "Etc/UTC"),
    (frozenset({"CIDR", "SUBNET"}), lambda name, n: "192.0.2.0/24"),
    (frozenset({"IP", "VIP"}), lambda name, n: f"192.0.2.{1 + n % 254}"),
    (frozenset({"UID", "GID", "PUID", "PGID"}), lambda name, n: "1000"),
)
_EMAIL_WORDS = frozenset({"EMAIL", "MAIL"})
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# A value SOPS encrypted: `ENC[AES256_GCM,data:...,iv:...,tag:...,type:str]`.
_ENCRYPTED = re.compile(r"^ENC\[[A-Z0-9_]+,data:.*,type:([a-z]+)\]$", re.DOTALL)
_TEMPLATE_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
# `{{ .NAME }}`, optionally piped through functions of a string (`{{ .password | urlquery }}`).
_SIMPLE_REFERENCE = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*)((?:\s*\|\s*[A-Za-z0-9]+)*)$")
# The string functions of external-secrets' templates (Go text/template and sprig) a reference may
# be piped through and still be rendered here.
_PIPE_FUNCTIONS: Mapping[str, Callable[[str], str]] = {
    "urlquery": urllib.parse.quote_plus,  # Go's url.QueryEscape
    "b64enc": lambda text: base64.b64encode(text.encode()).decode(),
    "upper": str.upper,
    "lower": str.lower,
    "trim": str.strip,
    "toString": str,
}
# Flux's variables (fluxcd/pkg envsubst, after bash): `${VAR}`, `${#VAR}` and every function of a
# value (`${VAR/./-}`, `${VAR:0:8}`, `${VAR,,}`) need a value; `${VAR:=default}`, `${VAR:-default}`,
# `${VAR=default}` and `${VAR-default}` have a default, which may itself use a variable
# (`${CLAIM:-${APP}}`: the default is read, not consumed, so the inner one is found too). `$${VAR}`
# is an escaped literal.
_VARIABLE = re.compile(r"(?<!\$)\$\{#?([A-Za-z_][A-Za-z0-9_]*)(?::?[=-](?=([^}$]*)))?")
# Files worth parsing: a document of kind ExternalSecret, or a top-level `sops:` key. Any other file,
# whatever it mentions, is served as it is written.
_EXTERNAL_SECRET_FILE = re.compile(r"^kind:\s*ExternalSecret\s*(?:#.*)?$", re.MULTILINE)
_SOPS_FILE = re.compile(r"^sops:", re.MULTILINE)
_DOCKER_CONFIG_TYPE = "kubernetes.io/dockerconfigjson"
_DOCKER_CONFIG_KEY = ".dockerconfigjson"
_ES_REMEDY = ("write the ExternalSecret as external-secrets.io documents it: spec.data items with secretKey and "
              "remoteRef.key, spec.dataFrom items with extract.key, find or sourceRef.generatorRef")


@dataclass(frozen=True)
class StandinValues:
    """The generated values of one run: the same source always gets the same value."""

    seed: str

    def value(self, source: Sequence[str], *, name: str) -> str:
        """The value standing in for `source` (where it comes from), shaped by `name` (what it is called)."""
        shaped = shaped_value(name, number=self.number(source))
        if shaped is not None:
            return shaped
        return base64.urlsafe_b64encode(self._digest(source)).decode().rstrip("=")

    def number(self, source: Sequence[str]) -> int:
        return int.from_bytes(self._digest(source)[:3], "big")

    def _digest(self, source: Sequence[str]) -> bytes:
        return hmac.new(self.seed.encode(), "\0".join(source).encode(), hashlib.sha256).digest()


def shaped_value(name: str, *, number: int = 0) -> str | None:
    """The value for a name whose value has a shape (a port, a time zone, an address, a user id, a host
    name, an e-mail address), `number` choosing among its kind; None for any other name (a secret)."""
    words = {word.upper() for word in _NAME_WORDS.findall(name)}
    if "TIME" in words and "ZONE" in words:
        words.add("TIMEZONE")
    for kind, make in _SHAPED_WORDS:
        if words & kind:
            return make(name, number)
    host = host_like_value(name)
    if host is None and words & _EMAIL_WORDS:
        return f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')[:63] or 'mail'}@{TEST_DOMAIN}"
    return host


def host_like_value(name: str) -> str | None:
    """A host name (or https URL) under the test domain for a name such as SECRET_DOMAIN or baseUrl; None
    for any other name."""
    words = {word.upper() for word in _NAME_WORDS.findall(name)}
    if not words & _HOST_WORDS:
        return None
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-") or "host"
    host = f"{label}.{TEST_DOMAIN}"
    return f"https://{host}" if "URL" in words else host


def _field(path: FieldPath) -> str:
    """`("spec", "data", 0, "secretKey")` -> `spec.data[0].secretKey`."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


def _malformed(doc: Document, path: FieldPath, problem: str, *, remedy: str) -> ConfigError:
    kind = doc.data.get("kind") if isinstance(doc.data, dict) else "document"
    name = dig(doc.data, ("metadata", "name")) or "(no name)"
    return ConfigError(f"{doc.location(path)}: {kind} {name}: {_field(path)} {problem}", remedy=remedy)


# ---- SOPS files without the age key ----------------------------------------------------------


def is_sops_encrypted(data: Any) -> bool:
    """Whether `data` is a document SOPS encrypted (it carries its `sops:` metadata)."""
    return isinstance(data, dict) and isinstance(data.get("sops"), dict)


def sops_standin(doc: Document, *, values: StandinValues) -> tuple[dict[str, Any], str]:
    """`doc` without its SOPS metadata and with every encrypted value replaced by a generated one; a note.

    SOPS encrypts values only, so keys stay. A Secret's `data` (and a ConfigMap's `binaryData`) holds
    base64, so its stand-in is the base64 of the generated value; `stringData` holds it plainly. A
    Secret's or ConfigMap's value is derived from its kind, name and key, the way the substitution
    stand-ins derive a variable from the Secret it would come from, so the two agree.
    """
    data: dict[str, Any] = doc.data
    kind = str(data.get("kind") or "document")
    name = str(dig(data, ("metadata", "name")) or "")
    replaced: list[str] = []

    def generated(path: tuple[str, ...], value_type: str) -> Any:
        in_map = kind in ("Secret", "ConfigMap") and len(path) == 2 and path[0] in ("data", "stringData",
                                                                                    "binaryData")
        source = (kind, name, path[1]) if in_map else ("sops", str(doc.path), *path)
        if value_type == "int":
            return values.number(source)
        if value_type == "float":
            return values.number(source) + 0.5
        if value_type == "bool":
            return True
        value = values.value(source, name=path[-1])
        if in_map and path[0] in ("data", "binaryData"):
            return base64.b64encode(value.encode()).decode()
        return value

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {key: walk(item, (*path, str(key))) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*path, str(index))) for index, item in enumerate(value)]
        if isinstance(value, str) and (match := _ENCRYPTED.match(value)):
            replaced.append(".".join(path))
            return generated(path, match.group(1))
        return value

    standin = {key: walk(value, (str(key),)) for key, value in data.items() if key != "sops"}
    what = ", ".join(replaced) if replaced else "none (no value was encrypted)"
    return standin, (f"{kind} {name}: SOPS-encrypted and no age key was given (--sops-age-key): served without its "
                     f"sops metadata, generated values for {what}")


# ---- ExternalSecrets -------------------------------------------------------------------------


def is_external_secret(data: Any) -> bool:
    return (isinstance(data, dict) and data.get("kind") == "ExternalSecret"
            and data.get("apiVersion") in EXTERNAL_SECRET_API_VERSIONS)


def external_secret_target(data: dict[str, Any]) -> str:
    """The name of the Secret an ExternalSecret makes: spec.target.name, by default its own."""
    return str(dig(data, ("spec", "target", "name")) or dig(data, ("metadata", "name")) or "")


def remote_properties(documents: Iterable[Any]) -> frozenset[tuple[str, str]]:
    """The (remote key, property) pairs the ExternalSecrets of a tree name: where a template's
    `{{ .NAME }}` over several extracted items most likely comes from."""
    found: set[tuple[str, str]] = set()
    for data in documents:
        if not is_external_secret(data):
            continue
        for item in _as_list(dig(data, ("spec", "data"))):
            key, prop = dig(item, ("remoteRef", "key")), dig(item, ("remoteRef", "property"))
            if key and prop:
                found.add((str(key), str(prop)))
        extracts = [_DataFrom.of(item) for item in _as_list(dig(data, ("spec", "dataFrom")))
                    if dig(item, ("extract", "key"))]
        template = dig(data, ("spec", "target", "template", "data"))
        if len(extracts) == 1 and isinstance(template, dict):
            (extract,) = extracts
            found.update((str(extract.extract), key) for text in template.values()
                         for name in _references(str(text)) or [] if (key := extract.remote_key(name)) is not None)
    return frozenset(found)


_REWRITE_LITERAL = re.compile(r"^\^([A-Za-z0-9_.-]+)\$$")


@dataclass(frozen=True)
class _DataFrom:
    """One spec.dataFrom item, as far as it says where a key of the Secret comes from."""

    extract: str | None  # the remote item an extract reads
    find: re.Pattern[str] | bool  # a find's name regexp; True for a find by path or tags; False: no find
    # its rewrites as (regexp, literal target); None when one is beyond this model (a transform, a merge,
    # a target with $1 groups, a source Python cannot compile)
    rewrites: tuple[tuple[re.Pattern[str], str], ...] | None

    @classmethod
    def of(cls, item: Any) -> _DataFrom:
        extract = dig(item, ("extract", "key"))
        find: re.Pattern[str] | bool = False
        if isinstance(item, dict) and item.get("find") is not None:
            pattern = dig(item, ("find", "name", "regexp"))
            # a regexp Python cannot compile (RE2 and Python differ at the edges) takes every key
            find = (_compiled(str(pattern)) if pattern else None) or True
        rewrites: list[tuple[re.Pattern[str], str]] | None = []
        for rewrite in _as_list(dig(item, ("rewrite",))):
            source, target = dig(rewrite, ("regexp", "source")), dig(rewrite, ("regexp", "target"))
            compiled = _compiled(str(source)) if source is not None else None
            if compiled is None or target is None or "$" in str(target) or rewrites is None:
                rewrites = None
                continue
            rewrites.append((compiled, str(target)))
        return cls(extract=str(extract) if extract else None, find=find,
                   rewrites=tuple(rewrites) if rewrites is not None else None)

    def rewritten(self, key: str) -> str | None:
        """The Secret key the store's `key` becomes (each rewrite applied to the last one's output, as
        external-secrets does); None when the rewrites are beyond this model."""
        if self.rewrites is None:
            return None
        for pattern, target in self.rewrites:
            key = pattern.sub(target, key)
        return key

    def remote_key(self, name: str, candidates: Iterable[str] = ()) -> str | None:
        """The store's key that becomes the Secret's `name`: `name` itself, one of `candidates` (the keys
        other ExternalSecrets read from this item) or the source of a literal rewrite `^KEY$` -> name;
        None when none of them does."""
        literal = [m.group(1) for pattern, target in self.rewrites or () if target == name
                   and (m := _REWRITE_LITERAL.match(pattern.pattern))]
        return next((key for key in (*literal, *candidates, name) if self.rewritten(key) == name), None)

    def holds(self, key: str) -> bool:
        """Whether a find of this item returns the store's `key`."""
        if isinstance(self.find, bool):
            return self.find
        return self.find.search(key) is not None


def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _reference(action: str) -> tuple[str, list[Callable[[str], str]]] | None:
    """The name a template action reads and the functions it pipes it through, when it is a plain
    `{{ .NAME }}` or pipes it only through `_PIPE_FUNCTIONS`; None otherwise."""
    match = _SIMPLE_REFERENCE.match(action)
    if match is None:
        return None
    names = [name.strip() for name in match.group(2).split("|")[1:]]
    if any(name not in _PIPE_FUNCTIONS for name in names):
        return None
    return match.group(1), [_PIPE_FUNCTIONS[name] for name in names]


def _references(template: str) -> list[str] | None:
    """The names a template reads, when every action of it is a `_reference`; None otherwise."""
    names = []
    for action in _TEMPLATE_ACTION.findall(template):
        reference = _reference(action)
        if reference is None:
            return None
        names.append(reference[0])
    return names


def _render(template: str, lookup: Callable[[str], str]) -> str | None:
    """`template` with each `{{ .NAME }}` replaced by `lookup(NAME)` (through its pipe's functions); None
    unless every action is a `_reference`."""
    if _references(template) is None:
        return None

    def value(action: re.Match[str]) -> str:
        reference = _reference(action.group(1))
        if reference is None:
            return action.group(0)
        text = lookup(reference[0])
        for function in reference[1]:
            text = function(text)
        return text

    return _TEMPLATE_ACTION.sub(value, template)


def external_secret_standin(doc: Document, *, values: StandinValues,
                            known: Set[tuple[str, str]] = frozenset()) -> tuple[dict[str, Any], str]:
    """The plain Secret standing in for the ExternalSecret `doc`, with generated values; a note.

    Its keys are `spec.data[].secretKey`, or, when `spec.target.template.data` is given, the
    template's keys (with `mergePolicy: Merge`, both). A template value whose every action is a
    plain `{{ .NAME }}` is rendered with the generated values, any other gets a generated value.
    `spec.dataFrom` items (extract, find, generators) name no keys: without a template none are
    generated, and the note says so. A value comes from (remoteRef.key, property), so the same remote
    item gets the same value in every ExternalSecret of the run; `known` (from `remote_properties`)
    says which of several extracted items a template's name belongs to.
    """
    data: dict[str, Any] = doc.data
    es_name = str(dig(data, ("metadata", "name")) or "")
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise _malformed(doc, ("spec",), "is missing or not a mapping", remedy=_ES_REMEDY)
    for path in (("spec", "target"), ("spec", "target", "template"), ("spec", "target", "template", "metadata")):
        if dig(data, path) is not None and not isinstance(dig(data, path), dict):
            raise _malformed(doc, path, "must be a mapping", remedy=_ES_REMEDY)
    for path in (("spec", "data"), ("spec", "dataFrom")):
        if dig(data, path) is not None and not isinstance(dig(data, path), list):
            raise _malformed(doc, path, "must be a list", remedy=_ES_REMEDY)

    context: dict[str, str] = {}
    for index, item in enumerate(_as_list(spec.get("data"))):
        where: FieldPath = ("spec", "data", index)
        if not isinstance(item, dict) or not item.get("secretKey"):
            raise _malformed(doc, (*where, "secretKey"), "is missing",
                             remedy="give every spec.data item a secretKey (its key in the Secret made) and a "
                                    "remoteRef.key (the item in the secret store)")
        key = dig(item, ("remoteRef", "key"))
        if not key:
            raise _malformed(doc, (*where, "remoteRef", "key"), "is missing",
                             remedy="give every spec.data item a remoteRef.key: the item in the secret store")
        prop = str(dig(item, ("remoteRef", "property")) or "")
        context[str(item["secretKey"])] = values.value(("remote", str(key), prop), name=prop or str(item["secretKey"]))

    data_from: list[_DataFrom] = []
    unnamed: list[str] = []  # dataFrom items whose keys only the store knows
    for index, item in enumerate(_as_list(spec.get("dataFrom"))):
        extract = dig(item, ("extract", "key"))
        if extract:
            data_from.append(_DataFrom.of(item))
            unnamed.append(f"extract {extract}")
        elif isinstance(item, dict) and item.get("find") is not None:
            data_from.append(_DataFrom.of(item))
            unnamed.append("find")
        elif dig(item, ("sourceRef", "generatorRef")) is not None:
            unnamed.append(f"generator {dig(item, ('sourceRef', 'generatorRef', 'name')) or ''}".rstrip())
        else:
            raise _malformed(doc, ("spec", "dataFrom", index), "names no extract.key, find or sourceRef.generatorRef",
                             remedy=_ES_REMEDY)

    def lookup(name: str) -> str:
        """The value of `name`: where the store keeps it, so every ExternalSecret reading it agrees."""
        if name in context:
            return context[name]
        # the last item known to hold the name (a later item wins in external-secrets), through its
        # rewrites: an extract when another ExternalSecret reads that key of its item (or a rewrite names
        # it), a find when its regexp takes the key. A find's key is a whole secret of the store, as a
        # spec.data item without a property reads it.
        for item in reversed(data_from):
            if item.extract is not None:
                read = {key for remote, key in known if remote == item.extract}
                key = item.remote_key(name, sorted(read))
                if key is not None and (key in read or key != name):
                    return values.value(("remote", item.extract, key), name=name)
            elif (key := item.remote_key(name)) is not None and item.holds(key):
                return values.value(("remote", key, ""), name=name)
        # else the first extract: an app's own item comes first by convention
        first = next((item for item in data_from if item.extract is not None), None)
        if first is not None:
            return values.value(("remote", str(first.extract), first.remote_key(name) or name), name=name)
        if data_from:
            return values.value(("remote", name, ""), name=name)
        return values.value(("template", es_name, name), name=name)

    template: dict[str, Any] = dig(data, ("spec", "target", "template")) or {}
    template_data = template.get("data")
    if template_data is not None and not isinstance(template_data, dict):
        raise _malformed(doc, ("spec", "target", "template", "data"), "must be a mapping of key to template",
                         remedy="write spec.target.template.data as `KEY: \"{{ .name }}\"` lines")
    secret_type = str(template.get("type") or "Opaque")
    unrendered: list[str] = []
    if template_data is None:
        string_data = dict(context)
    else:
        string_data = dict(context) if template.get("mergePolicy") == "Merge" else {}
        for key, text in template_data.items():
            rendered = _render(str(text), lookup)
            if rendered is None:
                unrendered.append(str(key))
                rendered = values.value(("template", es_name, str(key)), name=str(key))
            string_data[str(key)] = rendered
    if secret_type == _DOCKER_CONFIG_TYPE and not _is_json(string_data.get(_DOCKER_CONFIG_KEY)):
        string_data[_DOCKER_CONFIG_KEY] = '{"auths":{}}'  # the API server refuses a value that is not JSON
        unrendered = [k for k in unrendered if k != _DOCKER_CONFIG_KEY]
        unrendered.append(f"{_DOCKER_CONFIG_KEY} (an empty docker config)")

    metadata: dict[str, Any] = {"name": external_secret_target(data)}
    if dig(data, ("metadata", "namespace")):
        metadata["namespace"] = data["metadata"]["namespace"]
    for part in ("labels", "annotations"):
        if isinstance(dig(template, ("metadata", part)), dict):
            metadata[part] = dict(template["metadata"][part])
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": secret_type}
    if string_data:
        secret["stringData"] = string_data

    store = _as_mapping(spec.get("secretStoreRef"))
    store_name = f" of {store.get('kind') or 'SecretStore'} {store['name']}" if store.get("name") else ""
    note = (f"ExternalSecret {es_name}{store_name} replaced by Secret {metadata['name']} with keys "
            f"{', '.join(string_data) or '(none)'} and generated values (the drill cluster runs no external-secrets "
            "operator)")
    if unrendered:
        note += f"; template values not rendered, generated instead: {', '.join(unrendered)}"
    if unnamed and (template_data is None or template.get("mergePolicy") == "Merge"):
        note += f"; the keys of dataFrom {', '.join(unnamed)} only the secret store knows: none generated"
    if template.get("templateFrom"):
        note += "; template.templateFrom not applied (its keys are not known)"
    return secret, note


def _is_json(text: str | None) -> bool:
    try:
        return text is not None and isinstance(json.loads(text), dict)
    except ValueError:
        return False


# ---- the published tree ----------------------------------------------------------------------


def secret_standin_files(files: Mapping[Path, str], *, root: Path, values: StandinValues,
                         sops_standins: bool) -> tuple[dict[Path, str], list[str]]:
    """The files of `files` (relative path -> text) that need secret stand-ins, rewritten; a note per stand-in.

    ExternalSecrets always become Secrets. SOPS-encrypted documents become plain ones only with
    `sops_standins` (no age key given); with the key, a SOPS file is left byte for byte (its MAC covers
    the bytes) for kustomize-controller to decrypt. `root` only names the files in errors.
    """
    parsed = {path: load_documents(root / path, root=root, text=text) for path, text in files.items()
              if _EXTERNAL_SECRET_FILE.search(text) or (sops_standins and _SOPS_FILE.search(text))}
    known = remote_properties(doc.data for docs in parsed.values() for doc in docs)
    changed: dict[Path, str] = {}
    notes: list[str] = []
    for path, docs in parsed.items():
        if not sops_standins and any(is_sops_encrypted(doc.data) for doc in docs):
            continue
        out: list[Any] = []
        made: list[str] = []
        for doc in docs:
            data = doc.data
            if is_sops_encrypted(data):
                data, note = sops_standin(doc, values=values)
                made.append(note)
                doc = Document(path=doc.path, index=doc.index, line=doc.line, data=data, lines=doc.lines)
            if is_external_secret(data):
                data, note = external_secret_standin(doc, values=values, known=known)
                made.append(note)
            out.append(data)
        if made:
            changed[path] = yaml.safe_dump_all(out, sort_keys=False)
            notes += [f"{path}: {note}" for note in made]
    return changed, notes


# ---- the Kustomizations the drill applies ----------------------------------------------------


def without_decryption(kustomization: dict[str, Any], *, namespace: str = "flux-system") -> tuple[dict[str, Any],
                                                                                                  str | None]:
    """`kustomization` without `spec.decryption`, for a drill whose SOPS files are stand-ins (nothing is
    left to decrypt, and the key Secret it names does not exist); a note, None if it had none."""
    spec = kustomization.get("spec")
    if not isinstance(spec, dict) or "decryption" not in spec:
        return kustomization, None
    decryption = _as_mapping(spec["decryption"])
    secret = dig(decryption, ("secretRef", "name"))
    how = f"{decryption.get('provider') or 'sops'}{f', Secret {secret}' if secret else ''}"
    body = {**kustomization, "spec": {key: value for key, value in spec.items() if key != "decryption"}}
    return body, (f"Kustomization {_ks_ref(kustomization, namespace)}: spec.decryption ({how}) dropped: no age key "
                  "was given, so the repo's SOPS files are served with generated values and nothing is left to "
                  "decrypt")


def _ks_ref(kustomization: dict[str, Any], namespace: str) -> str:
    return f"{dig(kustomization, ('metadata', 'namespace')) or namespace}/{dig(kustomization, ('metadata', 'name'))}"


def variables_used(documents: Iterable[Any]) -> dict[str, str | None]:
    """The Flux variables `documents` use, each with its `${VAR:=default}` default (None for a plain
    `${VAR}` or a function of it such as `${VAR/./-}`, which needs a value); documents with
    substitution disabled (annotation or label) are skipped."""
    found: dict[str, str | None] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            for match in _VARIABLE.finditer(value):
                name, default = match.group(1), match.group(2)
                if default is None:
                    found[name] = None  # used once plainly, it needs a value, whatever its defaults elsewhere
                elif name not in found:
                    found[name] = default

    for data in documents:
        if "disabled" in (dig(data, ("metadata", part, SUBSTITUTE_DISABLED)) for part in ("annotations", "labels")):
            continue
        walk(data)
    return found


@dataclass(frozen=True)
class _Source:
    """What a substituteFrom entry names, as the drill cluster would have it."""

    present: bool  # the entry is left for kustomize-controller to read
    reason: str = ""  # why it cannot be had
    keys: frozenset[str] | None = None  # its keys, when the repo shows them
    values: Mapping[str, str] | None = None  # its stand-in's values, when they are known here
    inline: bool = False  # the repo holds it in clear: its own values are inlined, nothing generated


def substitution_standins(kustomization: dict[str, Any], *, manifests: Sequence[Manifest], values: StandinValues,
                          sops_standins: bool, namespace: str = "flux-system") -> tuple[dict[str, Any], list[str]]:
    """`kustomization` with the `postBuild.substituteFrom` entries the drill cannot have replaced by
    generated values in `postBuild.substitute`; notes.

    An entry cannot be had when it names a SOPS-encrypted Secret or ConfigMap and no age key was given
    (`sops_standins`), a Secret an ExternalSecret makes, or an object the repo (as `manifests`, the
    catalogue's, says) does not hold. Every variable the Kustomization's manifests use without a
    default, and that `postBuild.substitute` and the remaining entries do not give, gets a value: from
    the stand-in of the Secret it would come from where known, else generated (host-like names under
    the test domain). Variables with a default keep it, as Flux leaves them when undefined. Values go
    inline (`postBuild.substitute`) rather than into a ConfigMap: the drill applies these Kustomizations
    itself and has nothing to create or clean up then.
    """
    ks = _ks_ref(kustomization, namespace)
    post_build = _as_mapping(dig(kustomization, ("spec", "postBuild")))
    entries = post_build.get("substituteFrom")
    if not entries:
        return kustomization, []
    remedy = "write spec.postBuild.substituteFrom as a list of {kind: ConfigMap or Secret, name: NAME}"
    if not isinstance(entries, list):
        raise ConfigError(f"Kustomization {ks}: spec.postBuild.substituteFrom is not a list", remedy=remedy)
    home = ks.partition("/")[0]
    kept: list[Any] = []
    replaced: list[tuple[dict[str, Any], _Source]] = []
    provided: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("kind") not in ("Secret", "ConfigMap") or not entry.get("name"):
            raise ConfigError(f"Kustomization {ks}: spec.postBuild.substituteFrom[{index}] is {entry!r}, not a "
                              "ConfigMap or Secret reference", remedy=remedy)
        source = _substitution_source(str(entry["kind"]), str(entry["name"]), namespace=home, manifests=manifests,
                                      values=values, sops_standins=sops_standins)
        if source.present:
            kept.append(entry)
            provided |= source.keys or set()
        else:
            replaced.append((entry, source))
    if not replaced:
        return kustomization, []

    name = str(dig(kustomization, ("metadata", "name")))
    given = _as_mapping(post_build.get("substitute"))
    used = variables_used(m.obj for m in manifests if m.deployed_by == name)
    # The repo's own values of the objects it holds in clear, every key (the catalogue has already
    # substituted them, so `used` does not list them), later entries winning as in Flux.
    inlined = {var: value for _, source in replaced if source.inline
               for var, value in (source.values or {}).items() if var not in provided}
    stood_in = [(e, s) for e, s in replaced if not s.inline]
    needed = sorted(var for var, default in used.items() if default is None and var not in given
                    and var not in provided and var not in inlined)
    generated: dict[str, str] = {}
    for var in needed if stood_in else ():
        entry, source = next(((e, s) for e, s in reversed(stood_in) if var in (s.keys or ())), stood_in[-1])
        generated[var] = ((source.values or {}).get(var)
                          or values.value((str(entry["kind"]), str(entry["name"]), var), name=var))

    body = copy.deepcopy(kustomization)
    body_post = body["spec"]["postBuild"]
    if kept:
        body_post["substituteFrom"] = kept
    else:
        del body_post["substituteFrom"]
    body_post["substitute"] = {**inlined, **generated, **given}
    notes = []
    for entry, source in replaced:
        if source.inline:
            shown_vars = sorted(var for var in (source.values or {}) if var in inlined)
            notes.append(f"Kustomization {ks}: postBuild.substituteFrom {entry['kind']} {entry['name']} "
                         f"({source.reason}) inlined in postBuild.substitute with the repo's own values"
                         + (f" of {', '.join(shown_vars)}" if shown_vars else " (it holds none)"))
    if stood_in:
        dropped = "; ".join(f"{entry['kind']} {entry['name']} ({source.reason})" for entry, source in stood_in)
        shown = ", ".join(f"{var}={value if shaped_value(var) is not None else '(generated)'}"
                          for var, value in generated.items())
        notes.append(f"Kustomization {ks}: postBuild.substituteFrom {dropped} dropped; "
                     + (f"generated values in postBuild.substitute for the variables its manifests use: {shown}"
                        if shown else "its manifests use no variable that needs a value from it"))
    return body, notes


def _clear_data(obj: Mapping[str, Any]) -> dict[str, str]:
    """A ConfigMap's or clear Secret's values as Flux substitutes them (Secret `data` decoded;
    `stringData` as written, winning over `data` as the API server merges it)."""
    found: dict[str, str] = {}
    if obj.get("kind") == "Secret":
        for key, value in _as_mapping(obj.get("data")).items():
            try:
                found[str(key)] = base64.b64decode(str(value), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                continue
        found.update({str(k): str(v) for k, v in _as_mapping(obj.get("stringData")).items()})
    else:
        found.update({str(k): str(v) for k, v in _as_mapping(obj.get("data")).items()})
    return found


def _substitution_source(kind: str, name: str, *, namespace: str, manifests: Sequence[Manifest],
                         values: StandinValues, sops_standins: bool) -> _Source:
    # substituteFrom reads the Kustomization's own namespace; an object the repo writes without one
    # lands wherever its folder is applied, so it is taken too (as the catalogue does).
    candidates = sorted((m for m in manifests if m.namespace in (None, namespace)),
                        key=lambda m: m.namespace != namespace)
    for m in candidates:
        if m.kind == kind and m.group == "" and m.name == name:
            keys = frozenset(str(k) for part in ("data", "stringData", "binaryData")
                             if isinstance(m.obj.get(part), dict) for k in m.obj[part])
            if m.encrypted and sops_standins:
                return _Source(present=False, keys=keys,
                               reason=f"SOPS-encrypted in {m.path} and no age key was given")
            if m.encrypted:  # kustomize-controller decrypts it where the Kustomization applying it runs
                return _Source(present=True, keys=keys)
            # In clear: the Kustomization that applies it in production (the cluster's own, often
            # flux-system's) is not one the drill deploys, so its values are inlined.
            return _Source(present=False, keys=keys, values=_clear_data(m.obj), inline=True,
                           reason=f"in {m.path}, applied by "
                                  f"{'Kustomization ' + m.deployed_by if m.deployed_by else 'no Kustomization'}")
    if kind == "Secret":
        for m in candidates:
            if is_external_secret(m.obj) and external_secret_target(m.obj) == name:
                secret, _ = external_secret_standin(m.document, values=values,
                                                    known=remote_properties(x.obj for x in manifests))
                made = {str(k): str(v) for k, v in (secret.get("stringData") or {}).items()}
                return _Source(present=False, keys=frozenset(made), values=made,
                               reason=f"made by ExternalSecret {m.name} in {m.path}; the drill cluster runs no "
                                      "external-secrets operator")
    return _Source(present=False, reason="not in the repo")
