"""Settings come from defaults, ini keys, the drill config file and the command line, in that order;
a bad value names where it came from and how to fix it."""

from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import pytest

from restoredrill.config import DrillConfig, build_config
from restoredrill.drill.checks import Bound, FileCheck, HttpCheck, SqlCheck
from restoredrill.errors import ConfigError


class ConfigArgs(TypedDict, total=False):
    ini: Mapping[str, Any]
    cli: Mapping[str, Any]
    drill: str
    overrides: Sequence[str]


def config(tmp_path: Path, *, ini: Mapping[str, Any] | None = None, cli: Mapping[str, Any] | None = None,
           drill: str | None = None, overrides: Sequence[str] = ()) -> DrillConfig:
    (tmp_path / "repo").mkdir(exist_ok=True)
    if drill is not None:
        (tmp_path / "repo" / "restoredrill.yaml").write_text(drill)
    return build_config(defaults={"gitops_repo": "repo", "reports_dir": "reports"}, ini=ini or {}, cli=cli or {},
                        overrides=overrides, base_dir=tmp_path)


def test_defaults(tmp_path: Path) -> None:
    result = config(tmp_path)
    assert result.gitops_repo == tmp_path / "repo"
    assert result.reports_dir == tmp_path / "reports"
    assert result.min_ttl == timedelta(hours=720)
    assert result.drill_config is None
    assert result.timeout("restore") > 0


def test_precedence_ini_then_file_then_command_line(tmp_path: Path) -> None:
    drill = "min_ttl: 240h\nstrict_rules: [cnpg-object-store-backup]\n"
    assert config(tmp_path, ini={"min_ttl": "100h"}).min_ttl == timedelta(hours=100)
    assert config(tmp_path, ini={"min_ttl": "100h"}, drill=drill).min_ttl == timedelta(hours=240)
    from_cli = config(tmp_path, ini={"min_ttl": "100h"}, cli={"min_ttl": "48h", "strict_rules": "all"}, drill=drill)
    assert from_cli.min_ttl == timedelta(hours=48)
    assert from_cli.strict_rules == frozenset({"all"})


def test_the_drill_file_is_found_at_the_repo_root(tmp_path: Path) -> None:
    result = config(tmp_path, drill="apps:\n  seaweedfs:\n    backup_required: false\n    reason: the store\n")
    assert result.drill_config == tmp_path / "repo" / "restoredrill.yaml"
    assert result.app("seaweedfs").backup_required is False
    assert result.app("pelican").backup_required is True


def test_set_overrides_any_key(tmp_path: Path) -> None:
    result = config(tmp_path, overrides=["apps.seaweedfs.backup_required=false", "timeouts.restore=30m"])
    assert result.app("seaweedfs").backup_required is False
    assert result.timeout("restore") == 1800


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"cli": {"min_ttl": "30d"}}, ["min_ttl from command line", 'unknown unit "d"', "--min-ttl"]),
    ({"ini": {"fetch_schemas": "maybe"}}, ["fetch_schemas from ini key fetch_schemas", "not a boolean"]),
    ({"drill": "min_tll: 720h\n"}, ["restoredrill.yaml:1: unknown key 'min_tll'", "did you mean 'min_ttl'"]),
    ({"drill": "apps:\n  pelican:\n    backup_requierd: false\n"},
     ["unknown key apps.pelican.backup_requierd", "did you mean 'backup_required'", "per-app keys are"]),
    ({"drill": "timeouts:\n  restroe: 10m\n"}, ["unknown timeout 'restroe'", "did you mean 'restore'"]),
    ({"drill": "timeouts:\n  restore: -5\n"}, ["timeouts.restore"]),
    ({"drill": "min_ttl: [\n"}, ["restoredrill.yaml", "YAML does not parse"]),
    ({"cli": {"drill_config": "nope.yaml"}}, ["nope.yaml", "does not exist", "--drill-config"]),
    ({"overrides": ["apps.pelican"]}, ["is not key=value"]),
])
def test_bad_settings_say_where_and_how_to_fix(tmp_path: Path, kwargs: ConfigArgs, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, **kwargs)
    for text in expected:
        assert text in str(raised.value)


def test_checks_in_the_drill_file_arrive_on_the_app(tmp_path: Path) -> None:
    drill = """apps:
  pelican:
    checks:
      - sql: SELECT count(*) FROM assets
        greater_than: 0
      - http: http://pelican-panel.pelican.svc:80/health
      - file: pelican-data:/restoredrill-seed/small.txt
        min_bytes: 1
        name: seed file
"""
    assert config(tmp_path, drill=drill).app("pelican").checks == (
        SqlCheck(name="sql: SELECT count(*) FROM assets", query="SELECT count(*) FROM assets",
                 bounds=(Bound("greater_than", Decimal(0)),)),
        HttpCheck(name="http: http://pelican-panel.pelican.svc:80/health",
                  url="http://pelican-panel.pelican.svc:80/health", status=200),
        FileCheck(name="seed file", claim="pelican-data", path="/restoredrill-seed/small.txt", min_bytes=1),
    )
    assert config(tmp_path, drill=drill).app("immich").checks == ()
    from_set = config(tmp_path, overrides=['apps.immich.checks=[{sql: "SELECT 1", expect: "1"}]'])
    assert [c.name for c in from_set.app("immich").checks] == ["sql: SELECT 1"]


def test_a_bad_check_in_the_drill_file_names_the_file_the_item_and_the_fix(tmp_path: Path) -> None:
    drill = "apps:\n  pelican:\n    checks:\n      - sql: SELECT count(*) FROM assets\n        greater_than: many\n"
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, drill=drill)
    message = str(raised.value)
    assert f"{tmp_path / 'repo' / 'restoredrill.yaml'}: apps.pelican.checks[0].greater_than: 'many' is not a number" \
        in message
    assert "fix: write the bound as a number" in message
