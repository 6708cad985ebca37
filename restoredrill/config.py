"""Drill configuration: read once, from defaults, ini keys, the drill config file and the command
line (in that order of precedence, the last winning), into a frozen `DrillConfig`.

Every setting is declared once in `SETTINGS`, with one help text used for its CLI flag, its ini
key and the error a bad value produces. Per-app overrides live in the drill config file under
`apps:`, and any key can also be set with `--set key=value` (for example
`--set apps.seaweedfs.backup_required=false`).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from restoredrill.drill.checks import Check, parse_checks
from restoredrill.errors import ConfigError, ManifestError
from restoredrill.gosyntax import GoSyntaxError, format_go_duration, parse_go_duration
from restoredrill.timeouts import Timeouts
from restoredrill.yamlio import load_documents

DEFAULT_DRILL_CONFIG_NAME = "restoredrill.yaml"


@dataclass(frozen=True)
class AppOverride:
    """What the repo cannot say about one app (keyed by app or namespace name)."""

    # False for stateful namespaces that are deliberately not backed up (the backup store itself).
    backup_required: bool = True
    # Why: shown in the report wherever the override changes an outcome.
    reason: str = ""
    # The user's own checks of the restored app (restoredrill/drill/checks.py), run after the restore.
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class IgnoreEntry:
    """A finding the user has accepted: rule plus file and/or object (shell globs), with the reason."""

    rule: str
    reason: str
    file: str | None = None  # repo-relative path of the finding, e.g. kubernetes/apps/media/*
    object: str | None = None  # the subject as the finding names it, e.g. "namespace media"

    def matches(self, *, rule: str, file: str, subject: str) -> bool:
        return (self.rule in (rule, "*") and (self.file is None or fnmatch.fnmatchcase(file, self.file))
                and (self.object is None or fnmatch.fnmatchcase(subject, self.object)))


@dataclass(frozen=True)
class DrillConfig:
    gitops_repo: Path
    reports_dir: Path
    drill_config: Path | None = None
    apps_path: str = "kubernetes/apps"
    min_ttl: timedelta = timedelta(hours=720)
    strict_rules: frozenset[str] = frozenset()
    warning_rules: frozenset[str] = frozenset()
    fetch_schemas: bool = True
    sops_age_key: Path | None = None
    charts_dir: Path | None = None
    restore_status: tuple[str, ...] = ()
    allow_skipped_drills: bool = False
    full_cluster_apps: frozenset[str] = frozenset()
    production_credentials: Path | None = None
    production_s3_url: str | None = None
    production_backup: str = "latest"
    production_window: timedelta = timedelta(days=30)
    production_grace: timedelta = timedelta(hours=1)
    apps: Mapping[str, AppOverride] = field(default_factory=lambda: MappingProxyType({}))
    ignore: tuple[IgnoreEntry, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)

    def app(self, name: str) -> AppOverride:
        return self.apps.get(name, AppOverride())

    def timeout(self, name: str) -> float:
        return self.timeouts[name]


@dataclass(frozen=True)
class Setting:
    """One scalar setting: its CLI flag, ini key, drill-config key and how to read a value."""

    name: str
    help: str
    parse: Callable[[str], Any]
    kind: str = "string"  # ini type: "string", "bool" or "linelist"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _duration(text: str) -> timedelta:
    try:
        return parse_go_duration(str(text))
    except GoSyntaxError as error:
        raise ValueError(f"{error} (use Go duration syntax such as 720h or 720h0m0s; there is no 'd' unit)") from None


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def _names(value: str | Sequence[str]) -> frozenset[str]:
    items = value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
    return frozenset(items)


SETTINGS: tuple[Setting, ...] = (
    Setting("gitops_repo", "GitOps repo to check and drill (its kubernetes/apps tree); "
            "default: the bundled example under examples/home-cluster", Path),
    Setting("drill_config", f"drill config file (YAML) with per-app overrides; default: {DEFAULT_DRILL_CONFIG_NAME} "
            "at the GitOps repo's root if present", Path),
    Setting("reports_dir", "where Allure results, JUnit XML and summary.json are written (default: reports)", Path),
    Setting("apps_path", "folder of the repo holding <namespace>/<app>/ks.yaml (default: kubernetes/apps)", str),
    Setting("min_ttl", "minimum backup retention a Schedule must keep, as a Go duration (default: 720h, "
            "the runbook's 30 days)", _duration),
    Setting("strict_rules", "rule ids whose warnings fail the test (or 'all'), e.g. cnpg-object-store-backup",
            _names, "linelist"),
    Setting("warning_rules", "rule ids whose failures only warn", _names, "linelist"),
    Setting("fetch_schemas", "fetch missing CRD schemas from the Go module proxy (default: true)", _bool, "bool"),
    Setting("full_cluster_apps", "apps the full-cluster recovery backs up and restores (default: every drilled app)",
            _names, "linelist"),
    Setting("allow_skipped_drills", "accept a selected drill that is skipped (default: false, a skipped drill "
            "fails: it proved nothing)", _bool, "bool"),
    Setting("production_credentials", "AWS-style credentials file (as Velero's Secret holds it) the production-backup "
            "drill (-m production) reads production's object store with, through a ReadOnly location", Path),
    Setting("production_s3_url", "the production store's S3 URL as the drill cluster reaches it (default: the "
            "repo's s3Url)", str),
    Setting("production_backup", "which production backup the drill restores: latest (default), random (within "
            "production_window) or a Backup's name", str),
    Setting("production_window", "how far back `random` picks a production backup, as a Go duration (default "
            "720h)", _duration),
    Setting("production_grace", "how much later than its Schedule's next run a production backup may be before "
            "the drill fails it for its age (RPO), as a Go duration (default 1h)", _duration),
    Setting("sops_age_key", "age private key file the drill cluster's Flux decrypts the repo's SOPS secrets with; "
            "default: age.agekey at the GitOps repo's root if present", Path),
    Setting("charts_dir", "folder of packaged Helm charts (.tgz as `helm pull`/`helm package` write them) served in "
            "the drill cluster as the HelmRepository/OCIRepository sources the repo's HelmReleases name; needed "
            "offline (no registry reachable), optional otherwise", Path),
    Setting("restore_status", "resources whose status the drill's restores bring back, as `velero restore create "
            "--status-include-resources` does (default: none, as the runbook's restore); e.g. "
            "helmreleases.helm.toolkit.fluxcd.io, without whose status helm-controller upgrades a restored release",
            lambda value: tuple(sorted(_names(value))), "linelist"),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


def build_config(
    *,
    defaults: Mapping[str, Any],
    ini: Mapping[str, Any],
    cli: Mapping[str, Any],
    overrides: Sequence[str] = (),
    base_dir: Path,
) -> DrillConfig:
    """Merge the sources into a DrillConfig. Raises ConfigError naming the source and the fix.

    `defaults`, `ini` and `cli` map setting names to raw values (None or absent: not given);
    `overrides` are `key=value` strings from `--set`. Relative paths resolve against `base_dir`.
    """
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, values in (("default", defaults), ("ini", ini), ("command line", cli)):
        for name, value in values.items():
            if value is not None and value != "" and value != []:
                raw[name] = value
                origin[name] = f"ini key {name}" if source == "ini" else source
    from_cli = {name for name in raw if origin[name] == "command line"}

    repo = _parsed("gitops_repo", raw["gitops_repo"], origin)
    repo = (base_dir / repo).resolve()
    drill_path = raw.get("drill_config")
    if drill_path is not None:
        drill_path = (base_dir / _parsed("drill_config", drill_path, origin)).resolve()
        if not drill_path.is_file():
            raise ConfigError(f"drill config file {drill_path} (from {origin['drill_config']}) does not exist",
                              remedy="pass an existing file with --drill-config, or drop the setting")
    elif (repo / DEFAULT_DRILL_CONFIG_NAME).is_file():
        drill_path = repo / DEFAULT_DRILL_CONFIG_NAME

    file_values: dict[str, Any] = _read_drill_file(drill_path) if drill_path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not key=value", remedy="write it as --set apps.NAME.FIELD=VALUE")
        _set_dotted(file_values, key.strip(), yaml.safe_load(value) if value else "", source=f"--set {item}")

    # The drill file sits between ini and the command line.
    merged = {name: _parsed(name, value, origin) for name, value in raw.items() if name not in from_cli}
    for name in SETTINGS_BY_NAME:
        if name in file_values and name not in ("gitops_repo", "drill_config") and name not in from_cli:
            origin[name] = f"{drill_path or '--set'} key {name}"
            merged[name] = _parsed(name, file_values[name], origin)
    merged |= {name: _parsed(name, raw[name], origin) for name in from_cli}

    config = DrillConfig(
        gitops_repo=repo,
        drill_config=drill_path,
        reports_dir=(base_dir / merged.get("reports_dir", Path("reports"))).resolve(),
    )
    scalars = {k: v for k, v in merged.items() if k not in ("gitops_repo", "drill_config", "reports_dir")}
    if scalars.get("production_credentials") is not None:
        scalars["production_credentials"] = (base_dir / scalars["production_credentials"]).resolve()
    if scalars.get("sops_age_key") is not None:
        scalars["sops_age_key"] = (base_dir / scalars["sops_age_key"]).resolve()
    if scalars.get("charts_dir") is not None:
        scalars["charts_dir"] = (base_dir / scalars["charts_dir"]).resolve()
    elif (repo / "age.agekey").is_file():
        scalars["sops_age_key"] = repo / "age.agekey"
    config = replace(config, **scalars)
    source = str(drill_path or "--set")
    return replace(
        config,
        apps=MappingProxyType(_read_apps(file_values.get("apps"), source=source)),
        ignore=_read_ignore(file_values.get("ignore"), source=source),
        timeouts=Timeouts.parse(file_values.get("timeouts"), source=source, seconds_of=_timeout_seconds),
    )


def _parsed(name: str, value: Any, origin: Mapping[str, str]) -> Any:
    setting = SETTINGS_BY_NAME[name]
    if isinstance(value, Path | bool | frozenset | timedelta):
        return value
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{setting.name} from {origin.get(name, 'configuration')}: {error}",
                          remedy=f"{setting.flag}: {setting.help}") from None


_TOP_LEVEL_KEYS = frozenset({*SETTINGS_BY_NAME, "apps", "timeouts", "ignore"})


def _read_drill_file(path: Path) -> dict[str, Any]:
    try:
        documents = load_documents(path, root=path.parent)
    except ManifestError as error:
        raise ConfigError(f"drill config {path}: {error.message}", remedy=error.remedy) from None
    if not documents:
        return {}
    document = documents[0]
    if not isinstance(document.data, dict):
        raise ConfigError(f"drill config {path}: the file must be a mapping of settings",
                          remedy="see the README's 'Drill configuration' section for the keys")
    for key in document.data:
        if key not in _TOP_LEVEL_KEYS:
            raise ConfigError(f"drill config {path}:{document.line_of((key,))}: unknown key {key!r}"
                              f"{_did_you_mean(str(key), _TOP_LEVEL_KEYS)}",
                              remedy=f"known keys: {', '.join(sorted(_TOP_LEVEL_KEYS))}")
    return dict(document.data)


def _set_dotted(target: dict[str, Any], dotted: str, value: Any, *, source: str) -> None:
    keys = dotted.split(".")
    node = target
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {key!r} is a value, not a section", remedy="check the key path")
        node = child
    node[keys[-1]] = value


_APP_FIELDS = {f.name for f in fields(AppOverride)}


def _read_apps(value: Any, *, source: str) -> dict[str, AppOverride]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: `apps` must map app names to settings", remedy="write apps: {NAME: {...}}")
    apps: dict[str, AppOverride] = {}
    for name, settings in value.items():
        settings = settings or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{source}: apps.{name} must be a mapping", remedy="write apps.NAME.FIELD: VALUE")
        unknown = set(settings) - _APP_FIELDS
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{source}: unknown key apps.{name}.{key}{_did_you_mean(key, _APP_FIELDS)}",
                              remedy=f"per-app keys are: {', '.join(sorted(_APP_FIELDS))}")
        try:
            apps[str(name)] = AppOverride(
                backup_required=_bool(settings.get("backup_required", True)),
                reason=str(settings.get("reason", "")),
                checks=parse_checks(settings.get("checks"), source=source, app=str(name)),
            )
        except ValueError as error:
            raise ConfigError(f"{source}: apps.{name}: {error}", remedy="use true or false") from None
    return apps


_IGNORE_FIELDS = {f.name for f in fields(IgnoreEntry)}


def _read_ignore(value: Any, *, source: str) -> tuple[IgnoreEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{source}: `ignore` must be a list of entries",
                          remedy="write ignore: [{rule: RULE, file: PATH, reason: WHY}]")
    entries = []
    for index, item in enumerate(value):
        where = f"{source}: ignore[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a mapping", remedy="give rule, file and/or object, and reason")
        unknown = set(item) - _IGNORE_FIELDS
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(key, _IGNORE_FIELDS)}",
                              remedy=f"ignore entries take: {', '.join(sorted(_IGNORE_FIELDS))}")
        if not item.get("rule"):
            raise ConfigError(f"{where} names no rule", remedy="add rule: RULE-ID (or '*')")
        if not str(item.get("reason") or "").strip():
            raise ConfigError(f"{where} ({item['rule']}) gives no reason",
                              remedy="add reason: why this finding is accepted (it is shown in the report)")
        if item.get("file") is None and item.get("object") is None:
            raise ConfigError(f"{where} ({item['rule']}) names neither a file nor an object",
                              remedy="add file: PATH-GLOB and/or object: SUBJECT-GLOB, so one finding is silenced, "
                                     "not the whole rule (use warning_rules for that)")
        entries.append(IgnoreEntry(rule=str(item["rule"]), reason=str(item["reason"]).strip(),
                                   file=None if item.get("file") is None else str(item["file"]),
                                   object=None if item.get("object") is None else str(item["object"])))
    return tuple(entries)


def _timeout_seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    seconds = _duration(str(value)).total_seconds()
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


def _did_you_mean(key: str, known: Sequence[str] | frozenset[str] | Mapping[str, Any] | set[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(config: DrillConfig) -> str:
    """A short summary for the pytest header."""
    return (f"restoredrill: gitops repo {config.gitops_repo}, drill config {config.drill_config or 'none'}, "
            f"min TTL {format_go_duration(config.min_ttl)}, reports in {config.reports_dir}")
