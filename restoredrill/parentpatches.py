"""What a Flux Kustomization's own spec does to the objects it builds: `spec.patches`, `spec.namePrefix`,
`spec.nameSuffix` and `spec.commonMetadata`.

Real repos give every child Kustomization its shared settings this way (one patch on the parent adds
`sourceRef`, `decryption`, `postBuild.substituteFrom`, `interval`, `prune` to each app's ks.yaml, and often
`spec.patches` of its own for the HelmReleases below), so the catalogue must apply them for its
objects to be what Flux applies. Pure functions on plain objects; the catalogue calls them.

Upstream, at the versions pinned here (kustomize-controller v1.7.2, which builds with fluxcd/pkg/kustomize
v1.23.0 and sigs.k8s.io/kustomize/api v0.20.1, that is kustomize v5.7.1):

- fluxcd/pkg kustomize/kustomize_generator.go (`Generator.WriteFile`): the Kustomization's `spec.patches`
  are appended, in order, to `patches:` of the kustomization.yaml at `spec.path` (generated when the folder
  has none); `targetNamespace`, `namePrefix` and `nameSuffix` replace that file's own fields.
- kustomize api/internal/target/kusttarget_configplugin.go: the patch transformer runs before the
  namespace, prefix and suffix transformers, so a patch sees each object with the namespace the folders
  below `spec.path` gave it, not yet the one `targetNamespace` (or that top file's `namespace:`) sets.
- kustomize api/internal/builtins/PatchTransformer.go: a patch is strategic-merge when its text parses
  as objects (each needs `kind` and `metadata.name`, however unused), else JSON6902 (a list of
  operations); a JSON6902 patch needs a `target`; a strategic-merge patch with a target may hold one
  object only; without a target each object of the patch must match exactly one object of the build by
  group, version, kind, name and namespace (resmap/reswrangler.go `GetById`). A target that selects
  nothing is not an error.
- kustomize api/resmap/reswrangler.go (`Select`) and api/types/selector.go: group, version, kind, name
  and namespace of a target are regular expressions anchored at both ends; name and namespace match the
  object's original or current value (an unset namespace is `default`, a cluster-scoped object has
  none); `labelSelector`/`annotationSelector` are label selectors (kyaml's copy of apimachinery
  labels.Parse), evaluated only for objects whose id already matched.
- kustomize api/resource/resource.go (`ApplySmPatch`) and kyaml/yaml/merge2: a strategic merge keeps the
  object's kind, name and namespace; maps merge key by key, `null` deletes, `$patch: delete|replace`
  directives apply; a list is replaced unless the object's built-in Kubernetes schema gives it a merge key
  (custom resources such as Flux Kustomizations and HelmReleases have none in kyaml, so their lists,
  `spec.patches` and `postBuild.substituteFrom` included, are replaced whole). Merged lists put the
  patch's elements first (`MergeOptionsListPrepend`; kustomize issue #5904).
- kustomize api/filters/patchjson6902 with gopkg.in/evanphx/json-patch.v4 v4.12.0: RFC 6902 operations;
  `add` needs the parent to exist, `replace` and `remove` need the target to exist, an index may be `-`
  (append) or negative (from the end).
- kustomize api/internal/builtins/PrefixTransformer.go (SuffixTransformer alike): every object but a
  CustomResourceDefinition, an APIService and a Namespace is renamed, and kustomize's name references to
  the renamed objects follow (of those, the catalogue reads only pod volumes' `claimName`).
- kustomize-controller internal/controller/kustomization_controller.go (`apply`) with fluxcd/pkg ssa
  v0.60.0 utils/meta.go (`SetCommonMetadata`): after the build and post-build substitution, commonMetadata
  labels and annotations are set on each object's metadata, overriding keys it has.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restoredrill.errors import ManifestError
from restoredrill.yamlio import FieldPath, load_documents

_DELETE = object()  # a merge result: remove this field or element
DEFAULT_NAMESPACE = "default"  # resid.DefaultNamespace: an unset namespace, for matching
_DIRECTIVE = "$patch"


class PatchProblem(Exception):
    """Why Flux's build fails on one patch: where in the patch entry, what, and the fix."""

    def __init__(self, message: str, *, field_path: FieldPath = (), remedy: str) -> None:
        self.message = message
        self.field_path = field_path
        self.remedy = remedy
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# Label selectors (kyaml/yaml/internal/k8sgen/pkg/labels/selector.go, apimachinery's labels.Parse)
# ---------------------------------------------------------------------------------------------

_SPECIAL = frozenset("=!(),<>")
_OPERATORS = {"=": "=", "==": "=", "!=": "!=", "in": "in", "notin": "notin", ">": ">", "<": "<"}
_SYMBOLS = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "exists", "!exists", "=", "!=", "in", "notin", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        if self.operator in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        if self.operator in ("!=", "notin"):
            return self.key not in labels or labels[self.key] not in self.values
        try:  # > and <: both sides integers, else no match
            have, want = int(labels[self.key]), int(self.values[0])
        except (KeyError, ValueError):
            return False
        return have > want if self.operator == ">" else have < want


def _lex(selector: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(selector):
        char = selector[i]
        if char in " \t\r\n":
            i += 1
        elif char in _SPECIAL:
            symbol = next((s for s in _SYMBOLS if selector.startswith(s, i)), None)
            if symbol is None:
                raise ValueError(f"unexpected {char!r}")
            tokens.append(symbol)
            i += len(symbol)
        else:
            start = i
            while i < len(selector) and selector[i] not in _SPECIAL and selector[i] not in " \t\r\n":
                i += 1
            tokens.append(selector[start:i])
    return tokens


def _validate_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"invalid label key {key!r}: the prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"invalid label key {key!r}: a name of at most 63 letters, digits, '-', '_' or '.', "
                         "beginning and ending with a letter or digit")


def _validate_value(value: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise ValueError(f"invalid label value {value!r}")


def parse_label_selector(selector: str) -> tuple[Requirement, ...]:
    """Requirements of a label selector string; raises ValueError as kustomize's build would fail."""
    tokens = [*_lex(selector), ""]  # "" ends the input
    requirements: list[Requirement] = []
    position = 0

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def identifier(token: str) -> bool:
        return token not in ("", *_SYMBOLS)

    while tokens[position] != "":
        negate = tokens[position] == "!"
        if negate:
            take()
        key = take()
        if not identifier(key):
            raise ValueError(f"found {key or 'end of string'!r}, expected: identifier")
        _validate_key(key)
        if negate or tokens[position] in ("", ","):
            if negate and tokens[position] not in ("", ","):
                raise ValueError(f"found {tokens[position]!r}, expected: ',' or end of string")
            requirements.append(Requirement(key, "!exists" if negate else "exists"))
        else:
            operator = _OPERATORS.get(take())
            if operator is None:
                raise ValueError(f"found {tokens[position - 1]!r}, expected: '=', '!=', '==', 'in', 'notin'")
            values: set[str] = set()
            if operator in ("in", "notin"):
                if take() != "(":
                    raise ValueError("expected '(' after in/notin")
                last = "("
                while True:
                    token = take()
                    if token == ")":
                        if last in ("(", ","):
                            values.add("")
                        break
                    if token == ",":
                        if last in ("(", ","):
                            values.add("")
                    elif identifier(token) and last != "value":
                        values.add(token)
                        token = "value"
                    else:
                        raise ValueError(f"found {token or 'end of string'!r}, expected: ',', ')' or a value")
                    last = token
            else:
                values.add(take() if identifier(tokens[position]) else "")
                if operator in (">", "<") and not re.fullmatch(r"[-+]?[0-9]+", next(iter(values))):
                    raise ValueError("for '>' and '<' the value must be an integer")
            for value in values:
                _validate_value(value)
            requirements.append(Requirement(key, operator, tuple(sorted(values))))
        separator = take()
        if separator == "":
            break
        if separator != ",":
            raise ValueError(f"found {separator!r}, expected: ',' or end of string")
        if not identifier(tokens[position]) and tokens[position] != "!":
            raise ValueError("expected an identifier after ','")
    return tuple(requirements)


# ---------------------------------------------------------------------------------------------
# Targets (api/types/selector.go, resmap Select)
# ---------------------------------------------------------------------------------------------


@dataclass
class BuiltObject:
    """One object of a build as patches see it."""

    obj: dict[str, Any] | None  # None once a `$patch: delete` removed it from the build
    namespace_as_written: str | None
    namespace: str | None  # current: after the kustomization.yaml files below spec.path
    cluster_scoped: bool
    ref: str  # as a person names it, for messages
    patched_by: list[int] = field(default_factory=list)  # indices of the patches that changed it

    def gvk(self) -> tuple[str, str, str]:
        return _gvk(self.obj or {})

    def name(self) -> str:
        return str(_metadata(self.obj or {}).get("name") or "")

    def effective_namespaces(self) -> set[str]:
        if self.cluster_scoped:
            return {"_non_namespaceable_"}
        return {ns or DEFAULT_NAMESPACE for ns in (self.namespace_as_written, self.namespace)}


@dataclass(frozen=True)
class Target:
    """A patch's `target`: group, version, kind, name and namespace regexes and two selectors."""

    patterns: Mapping[str, re.Pattern[str]]  # field -> anchored pattern, only for fields that are set
    label_selector: str = ""
    annotation_selector: str = ""

    def selects(self, built: BuiltObject) -> bool:
        """kustomize's Select: id first, then the selectors (only parsed once an object gets that far)."""
        group, version, kind = built.gvk()
        if "namespace" in self.patterns and not any(
                self.patterns["namespace"].fullmatch(ns) for ns in built.effective_namespaces()):
            return False
        checks = {"name": built.name(), "group": group, "version": version, "kind": kind}
        if any(key in self.patterns and not self.patterns[key].fullmatch(value) for key, value in checks.items()):
            return False
        metadata = _metadata(built.obj or {})
        for key, selector in (("labelSelector", self.label_selector), ("annotationSelector", self.annotation_selector)):
            if not selector:
                continue
            try:
                requirements = parse_label_selector(selector)
            except ValueError as error:
                raise PatchProblem(
                    f"target.{key} {selector!r} does not parse: {error}", field_path=("target", key),
                    remedy="write a label selector as kubectl takes it, e.g. `app.kubernetes.io/name=web` or "
                           "`substitution.flux.home.arpa/disabled notin (true)`") from None
            values = metadata.get("labels" if key == "labelSelector" else "annotations")
            values = {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}
            if not all(r.matches(values) for r in requirements):
                return False
        return True


def _read_target(value: Any) -> Target:
    if not isinstance(value, dict):
        raise PatchProblem("`target` must be a mapping", field_path=("target",),
                           remedy="give `target:` fields such as `kind: Kustomization` and `labelSelector:`")
    patterns: dict[str, re.Pattern[str]] = {}
    for key in ("group", "version", "kind", "name", "namespace"):
        pattern = value.get(key)
        if pattern in (None, ""):
            continue
        if not isinstance(pattern, str):
            raise PatchProblem(f"`target.{key}` must be a string", field_path=("target", key),
                               remedy=f"quote the value of target.{key}")
        try:
            # NewSelectorRegex anchors each pattern: `^(?:PATTERN)$` (Go RE2; the common syntax is Python's too).
            patterns[key] = re.compile(f"(?:{pattern})")
        except re.error as error:
            raise PatchProblem(f"`target.{key}` {pattern!r} is not a regular expression: {error}",
                               field_path=("target", key),
                               remedy="write the name as a regular expression (kustomize anchors it at both ends), "
                                      "or escape its special characters") from None
    selectors = []
    for key in ("labelSelector", "annotationSelector"):
        selector = value.get(key) or ""
        if not isinstance(selector, str):
            raise PatchProblem(f"`target.{key}` must be a string", field_path=("target", key),
                               remedy=f"write target.{key} as one string, e.g. `a=b,c notin (d)`")
        selectors.append(selector)
    return Target(patterns=patterns, label_selector=selectors[0], annotation_selector=selectors[1])


# ---------------------------------------------------------------------------------------------
# Reading spec.patches
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    index: int  # position in spec.patches
    target: Target | None
    objects: tuple[dict[str, Any], ...] = ()  # a strategic-merge patch
    operations: tuple[Any, ...] | None = None  # a JSON6902 patch

    @property
    def kind(self) -> str:
        return "JSON6902" if self.operations is not None else "strategic-merge"


def read_patches(value: Any) -> tuple[list[Patch], list[tuple[int | None, PatchProblem]]]:
    """`spec.patches` as patches, and (index, problem) for each entry kustomize would refuse."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        return [], [(None, PatchProblem("`spec.patches` must be a list", remedy="write each patch as a list item "
                                        "with `patch:` and, optionally, `target:`"))]
    patches: list[Patch] = []
    problems: list[tuple[int | None, PatchProblem]] = []
    for index, entry in enumerate(value):
        try:
            patches.append(_read_patch(index, entry))
        except PatchProblem as problem:
            problems.append((index, problem))
    return patches, problems


def _read_patch(index: int, entry: Any) -> Patch:
    if not isinstance(entry, dict):
        raise PatchProblem("must be a mapping with `patch:` and, optionally, `target:`",
                           remedy="write the entry as `- patch: |` followed by the patch text")
    text = entry.get("patch")
    if not isinstance(text, str) or not text.strip():
        raise PatchProblem("has no `patch` text", field_path=("patch",),
                           remedy="give the entry `patch: |` with a strategic-merge object or a list of JSON6902 "
                                  "operations (Flux takes inline patches only, no `path:`)")
    target = _read_target(entry["target"]) if entry.get("target") is not None else None
    try:
        documents = [d.data for d in load_documents(Path("/patch"), root=Path("/"), text=text.strip())]
    except ManifestError as error:
        raise PatchProblem(f"`patch` text is not YAML: {error.message.split(': ', 1)[-1]}", field_path=("patch",),
                           remedy=error.remedy or "fix the YAML of the patch text") from None
    documents = [d for d in documents if d not in (None, {}, [])]
    if text.strip().startswith("[") or (documents and isinstance(documents[0], list)):
        # jsonPatchFromBytes: only the first YAML document is read.
        operations = documents[0] if documents else []
        if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
            raise PatchProblem("`patch` is a list but not of JSON6902 operations", field_path=("patch",),
                               remedy="write each operation as a mapping: `- op: add`, `path: /spec/...`, `value:`")
        if target is None:
            raise PatchProblem("is a JSON6902 patch without a `target`; kustomize refuses it",
                               remedy="add `target:` naming the objects to patch (kind, name, labelSelector...)")
        return Patch(index=index, target=target, operations=tuple(operations))
    invalid = [d for d in documents if not _is_object(d)]
    if invalid or not documents:
        raise PatchProblem(
            "`patch` is neither a strategic-merge patch nor a JSON6902 patch", field_path=("patch",),
            remedy="a strategic-merge patch is an object with `apiVersion`, `kind` and `metadata.name` (any name, "
                   "e.g. `_`, when a target is set); a JSON6902 patch is a list of `op`/`path`/`value` operations")
    if target is not None and len(documents) > 1:
        raise PatchProblem("holds several strategic-merge objects and a `target`; kustomize refuses that",
                           field_path=("patch",), remedy="split the objects into one patches entry each")
    return Patch(index=index, target=target, objects=tuple(documents))


def _is_object(document: Any) -> bool:
    """What kustomize's resource factory takes as an object: a mapping with kind and (but for a *List)
    metadata.name, no null list items."""
    if not isinstance(document, dict):
        return False
    kind = document.get("kind")
    if not kind or not isinstance(kind, str):
        return False
    return (kind.endswith("List") or bool(_metadata(document).get("name"))) and not _has_null_item(document)


def _has_null_item(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_null_item(v) for v in value.values())
    if isinstance(value, list):
        return any(v is None or _has_null_item(v) for v in value)
    return False


# ---------------------------------------------------------------------------------------------
# Applying patches to a build
# ---------------------------------------------------------------------------------------------


def apply_patches(objects: Sequence[BuiltObject], patches: Iterable[Patch]) -> list[tuple[int, PatchProblem]]:
    """Apply `patches` in order to the build's `objects` (changed in place); (index, problem) for each patch
    that fails. kustomize stops at the first failure; here the others still apply, so the rest of the
    catalogue stays as close as it can be."""
    problems: list[tuple[int, PatchProblem]] = []
    for patch in patches:
        try:
            _apply_patch([o for o in objects if o.obj is not None], patch)
        except PatchProblem as problem:
            problems.append((patch.index, problem))
    return problems


def _apply_patch(live: list[BuiltObject], patch: Patch) -> None:
    target = patch.target
    if target is not None:
        selected = [built for built in live if target.selects(built)]
        for built in selected:
            before = built.obj
            if patch.operations is not None:
                built.obj = json6902(built.obj or {}, patch.operations, ref=built.ref)
            else:
                built.obj = strategic_merge(built.obj or {}, patch.objects[0], ref=built.ref)
            if built.obj != before:
                built.patched_by.append(patch.index)
        return
    for document in patch.objects:
        group, version, kind = _gvk(document)
        name, namespace = str(_metadata(document)["name"]), _metadata(document).get("namespace")
        matches = [b for b in live if b.obj is not None and b.gvk() == (group, version, kind) and b.name() == name
                   and (b.cluster_scoped or (str(namespace) if namespace else DEFAULT_NAMESPACE)
                        in b.effective_namespaces())]
        where = f"{document.get('apiVersion')} {kind} {f'{namespace}/' if namespace else ''}{name}"
        if len(matches) != 1:
            found = "no object" if not matches else f"{len(matches)} objects"
            raise PatchProblem(
                f"has no `target`, so its object must match exactly one object of the build by apiVersion, kind, "
                f"name and namespace; {found} matches {where}", field_path=("patch",),
                remedy="add a `target:` (kind, name, labelSelector...) so the patch's own name is not used to find "
                       "the object, or write the object's exact apiVersion, kind, name and namespace in the patch")
        built = matches[0]
        before = built.obj
        built.obj = strategic_merge(built.obj or {}, document, ref=built.ref)
        if built.obj != before:
            built.patched_by.append(patch.index)


# ---------------------------------------------------------------------------------------------
# Strategic merge (kyaml merge2 as api/filters/patchstrategicmerge runs it)
# ---------------------------------------------------------------------------------------------

# Groups whose kinds kyaml has a built-in OpenAPI schema for; any other object (every custom resource)
# is merged without one, so its lists are replaced.
_BUILTIN_GROUPS = frozenset({"", "apps", "batch", "autoscaling", "policy", "networking.k8s.io",
                             "rbac.authorization.k8s.io", "storage.k8s.io", "scheduling.k8s.io",
                             "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io"})
# Lists with a patch merge key in the Kubernetes API (k8s.io/api core/v1 types.go `patchMergeKey` tags),
# by (the field holding the list, the list's field); "" is a list of scalars merged as a set. Keyed by the
# two field names, which in the built-in kinds above name one Kubernetes type each.
_MERGE_KEYS: Mapping[tuple[str, str], str] = {
    **{("spec", name): "name" for name in ("containers", "initContainers", "ephemeralContainers", "volumes",
                                          "imagePullSecrets", "resourceClaims", "schedulingGates")},
    ("spec", "hostAliases"): "ip",
    ("spec", "topologySpreadConstraints"): "topologyKey",
    **{(holder, "env"): "name" for holder in ("containers", "initContainers", "ephemeralContainers")},
    **{(holder, "volumeMounts"): "mountPath" for holder in ("containers", "initContainers", "ephemeralContainers")},
    **{(holder, "volumeDevices"): "devicePath" for holder in ("containers", "initContainers", "ephemeralContainers")},
    **{(holder, "ports"): "containerPort" for holder in ("containers", "initContainers", "ephemeralContainers")},
    ("metadata", "finalizers"): "",
    ("metadata", "ownerReferences"): "uid",
}


def strategic_merge(obj: Mapping[str, Any], patch: Mapping[str, Any], *,
                    ref: str = "the object") -> dict[str, Any] | None:
    """`obj` with `patch` merged in, or None when the patch deletes it (`$patch: delete`). The object keeps
    its apiVersion, kind, name and namespace (ApplySmPatch)."""
    group, _, kind = _gvk(obj)

    def merge_key(keys: tuple[str, ...]) -> str | None:
        if group not in _BUILTIN_GROUPS or len(keys) < 2:
            return None
        if kind == "Service" and keys == ("spec", "ports"):
            return "port"
        return _MERGE_KEYS.get((keys[-2], keys[-1]))

    merged = _merge(copy.deepcopy(dict(obj)), copy.deepcopy(dict(patch)), (), merge_key, ref)
    if merged is _DELETE or not isinstance(merged, dict):
        return None
    result: dict[str, Any] = merged
    result["apiVersion"], result["kind"] = obj.get("apiVersion"), obj.get("kind")
    metadata = result.setdefault("metadata", {})
    for key in ("name", "namespace"):
        if key in _metadata(obj):
            metadata[key] = _metadata(obj)[key]
        else:
            metadata.pop(key, None)
    return result


def _merge(dest: Any, patch: Any, path: tuple[str, ...], merge_key: Callable[[tuple[str, ...]], str | None],
           ref: str) -> Any:
    if patch is None:
        return _DELETE
    if isinstance(patch, dict):
        directive = patch.pop(_DIRECTIVE, None)
        if directive == "delete":
            return _DELETE
        if directive not in (None, "merge", "replace"):
            raise _merge_problem(f"unknown strategic merge directive `$patch: {directive}`", path, ref,
                                 "use `$patch: delete`, `replace` or `merge`")
        if dest is None or directive == "replace":
            return _cleaned(patch)
        if not isinstance(dest, dict):
            raise _merge_problem(f"sets a mapping where the object has {_kind_of(dest)}", path, ref,
                                 "make the patch's value the same type as the object's field")
        for key, value in patch.items():
            result = _merge(dest.get(key), value, (*path, str(key)), merge_key, ref)
            if result is _DELETE:
                dest.pop(key, None)
            else:
                dest[key] = result
        return dest
    if isinstance(patch, list):
        if dest is not None and not isinstance(dest, list):
            raise _merge_problem(f"sets a list where the object has {_kind_of(dest)}", path, ref,
                                 "make the patch's value the same type as the object's field")
        key = merge_key(path)
        if key is None or dest is None:
            return [_cleaned(item) if isinstance(item, dict) else item for item in patch]
        return _merge_list(dest, patch, key, path, merge_key, ref)
    if isinstance(dest, (dict, list)):
        raise _merge_problem(f"sets {_kind_of(patch)} where the object has {_kind_of(dest)}", path, ref,
                             "make the patch's value the same type as the object's field")
    return patch


def _merge_list(dest: list[Any], patch: list[Any], key: str, path: tuple[str, ...],
                merge_key: Callable[[tuple[str, ...]], str | None], ref: str) -> Any:
    directives = [item for item in patch if isinstance(item, dict) and set(item) == {_DIRECTIVE}]
    items = [item for item in patch if item not in directives]
    if any(d[_DIRECTIVE] == "delete" for d in directives):
        return _DELETE
    if any(d[_DIRECTIVE] == "replace" for d in directives):
        return [_cleaned(item) if isinstance(item, dict) else item for item in items]
    if key == "":  # a set of scalars: the patch's first, then the object's others
        return [*dict.fromkeys([*items, *dest])]
    merged: list[Any] = []
    # The object's elements by merge key; an element the patch names is merged (or deleted) and leaves it.
    remaining = {str(item[key]): item for item in dest if isinstance(item, dict) and key in item}
    for item in items:
        if not isinstance(item, dict) or key not in item:
            merged.append(item)
            continue
        value = _merge(remaining.pop(str(item[key]), None), item, path, merge_key, ref)
        if value is not _DELETE:
            merged.append(value)
    merged += [item for item in dest if not isinstance(item, dict) or key not in item or str(item[key]) in remaining]
    return merged


def _cleaned(value: Any) -> Any:
    """A patch value taken whole where the object has none: its nulls, `$patch: delete` mappings and
    directives dropped (kyaml's FieldSetter clears null fields; VisitMap clears a deleted one)."""
    if isinstance(value, dict):
        if value.get(_DIRECTIVE) == "delete":
            return _DELETE
        cleaned = {k: _cleaned(v) for k, v in value.items() if v is not None and k != _DIRECTIVE}
        return {k: v for k, v in cleaned.items() if v is not _DELETE}
    if isinstance(value, list):
        return [v for v in (_cleaned(v) for v in value) if v is not _DELETE]
    return value


def _merge_problem(message: str, path: tuple[str, ...], ref: str, remedy: str) -> PatchProblem:
    return PatchProblem(f"cannot be merged into {ref}: at {'.'.join(path) or 'the top'} it {message}",
                        field_path=("patch",), remedy=remedy)


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"the scalar {value!r}"


# ---------------------------------------------------------------------------------------------
# JSON6902 (gopkg.in/evanphx/json-patch.v4 v4.12.0)
# ---------------------------------------------------------------------------------------------


def json6902(obj: Mapping[str, Any], operations: Sequence[Any], *, ref: str = "the object") -> dict[str, Any]:
    """`obj` with the RFC 6902 operations applied, as kustomize's patchjson6902 filter applies them."""
    document: Any = copy.deepcopy(dict(obj))
    for number, operation in enumerate(operations):
        op, path = operation.get("op"), operation.get("path")
        where = f"operation {number} ({op} {path})"
        try:
            if not isinstance(path, str):
                raise ValueError("the operation has no `path`")
            if op == "add":
                document = _add(document, path, copy.deepcopy(operation.get("value")))
            elif op == "remove":
                document = _remove(document, path)
            elif op == "replace":
                container, key = _parent(document, path)
                _get(container, key, path)
                _set(container, key, copy.deepcopy(operation.get("value")))
            elif op in ("move", "copy"):
                source = operation.get("from")
                if not isinstance(source, str):
                    raise ValueError(f"a {op} operation needs `from`")
                container, key = _parent(document, source)
                value = _get(container, key, source)
                if op == "move":
                    document = _remove(document, source)
                document = _add(document, path, copy.deepcopy(value))
            elif op == "test":
                container, key = _parent(document, path)
                try:
                    have = _get(container, key, path)
                except ValueError:
                    have = None
                if have != operation.get("value"):
                    raise ValueError(f"the value at {path} is {have!r}, not {operation.get('value')!r}")
            else:
                raise ValueError(f"unknown op {op!r} (add, remove, replace, move, copy or test)")
        except ValueError as error:
            raise PatchProblem(
                f"cannot be applied to {ref}: {where}: {error}", field_path=("patch",),
                remedy="correct the operation's path for this object (`add` needs the parent to exist, `replace` "
                       "and `remove` the field itself), or narrow the `target` so it selects only objects that "
                       "have it") from None
    result: dict[str, Any] = document
    return result


def _tokens(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"the path {path!r} does not start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(document: Any, path: str) -> tuple[Any, str]:
    """The container holding the last step of `path`, and that step (json-patch's findObject)."""
    parts = _tokens(path)
    container = document
    for part in parts[:-1]:
        if isinstance(container, dict) and part in container:
            container = container[part]
        elif (isinstance(container, list) and re.fullmatch(r"-?[0-9]+", part)
              and -len(container) <= int(part) < len(container)):
            container = container[int(part)]
        else:
            raise ValueError(f"the object is missing {path} ({part!r} is not there)")
        if not isinstance(container, (dict, list)):
            raise ValueError(f"the object is missing {path} ({part!r} holds a scalar)")
    return container, parts[-1]


def _index(container: list[Any], key: str, *, inserting: bool = False) -> int:
    if not re.fullmatch(r"-?[0-9]+", key):
        raise ValueError(f"{key!r} is not a list index")
    index = int(key)
    limit = len(container) + (1 if inserting else 0)
    if index < 0:
        index += len(container)
    if not 0 <= index < limit:
        raise ValueError(f"index {key} is out of range (the list has {len(container)} items)")
    return index


def _get(container: Any, key: str, path: str) -> Any:
    if isinstance(container, dict):
        if key not in container:
            raise ValueError(f"the object is missing {path}")
        return container[key]
    return container[_index(container, key)]


def _set(container: Any, key: str, value: Any) -> None:
    if isinstance(container, dict):
        container[key] = value
    else:
        container[_index(container, key)] = value


def _add(document: Any, path: str, value: Any) -> Any:
    container, key = _parent(document, path)
    if isinstance(container, dict):
        container[key] = value
    elif key == "-":
        container.append(value)
    else:
        container.insert(_index(container, key, inserting=True), value)
    return document


def _remove(document: Any, path: str) -> Any:
    container, key = _parent(document, path)
    if isinstance(container, dict):
        if key not in container:
            raise ValueError(f"the object is missing {path}, so it cannot be removed")
        del container[key]
    else:
        del container[_index(container, key)]
    return document


# ---------------------------------------------------------------------------------------------
# namePrefix / nameSuffix and commonMetadata
# ---------------------------------------------------------------------------------------------

_NOT_RENAMED = frozenset({("apiextensions.k8s.io", "CustomResourceDefinition"),
                          ("apiregistration.k8s.io", "APIService"), ("", "Namespace")})
# Where pod specs sit, for the claimName references kustomize renames with the PVCs they name.
_POD_SPECS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",), "Deployment": ("spec", "template", "spec"), "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"), "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"), "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def add_name_affixes(objects: Sequence[BuiltObject], *, prefix: str, suffix: str) -> None:
    """spec.namePrefix/nameSuffix: rename every object but CRDs, APIServices and Namespaces, and the pod
    volumes' claimName of the PVCs renamed with them (each BuiltObject gets a renamed copy)."""
    if not prefix and not suffix:
        return
    renamed_claims: dict[tuple[str | None, str], str] = {}
    for built in objects:
        if built.obj is None:
            continue
        built.obj = copy.deepcopy(built.obj)
        if _gvk(built.obj)[0::2] in _NOT_RENAMED:
            continue
        metadata = built.obj.setdefault("metadata", {})
        new = f"{prefix}{metadata.get('name', '')}{suffix}"
        if _gvk(built.obj)[0::2] == ("", "PersistentVolumeClaim"):
            renamed_claims[(built.namespace, str(metadata.get("name")))] = new
        metadata["name"] = new
    for built in objects:
        path = _POD_SPECS.get(_gvk(built.obj or {})[2]) if built.obj is not None else None
        spec = _dig(built.obj, path) if path else None
        for volume in (spec.get("volumes") or []) if isinstance(spec, dict) else []:
            claim = volume.get("persistentVolumeClaim") if isinstance(volume, dict) else None
            if isinstance(claim, dict) and (built.namespace, str(claim.get("claimName"))) in renamed_claims:
                claim["claimName"] = renamed_claims[(built.namespace, str(claim["claimName"]))]


def with_common_metadata(obj: Mapping[str, Any], common: Any) -> dict[str, Any]:
    """spec.commonMetadata's labels and annotations set on `obj`'s metadata, overriding keys it has."""
    result = dict(obj)
    if not isinstance(common, dict):
        return result
    metadata = dict(_metadata(obj))
    for key in ("labels", "annotations"):
        values = common.get(key)
        if isinstance(values, dict) and values:
            existing = metadata.get(key)
            metadata[key] = {**(existing if isinstance(existing, dict) else {}),
                             **{str(k): str(v) for k, v in values.items()}}
    result["metadata"] = metadata
    return result


# ---------------------------------------------------------------------------------------------


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _gvk(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    group, _, version = str(obj.get("apiVersion") or "").rpartition("/")
    return group, version, str(obj.get("kind") or "")


def _dig(obj: Any, path: Iterable[str]) -> Any:
    for step in path:
        obj = obj.get(step) if isinstance(obj, dict) else None
    return obj
