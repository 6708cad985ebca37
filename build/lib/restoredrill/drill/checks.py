"""The user's own checks of a restored app: the drill config's `apps.<name>.checks`.

What the drill's seeded files and rows cannot show is whether the app itself came back: its own
table has its rows, its health endpoint answers, the file it cannot start without is there. Each
check is one of

- `sql`: a query returning one value, compared with `expect` (exact text) or bounds
  (`greater_than`, `at_least`, `less_than`, `at_most`, compared as decimal numbers);
- `http`: a GET from inside the app's namespace, compared with `status` (default 200);
- `file`: `claim:path` inside a restored volume, optionally at least `min_bytes` long.

They run after the restore through a `CheckRunner` the drill implements (SQL through the app's own
database pods, HTTP and files from its inspector pod); each gives a `CheckResult` for the report.
A check that cannot run (the runner raised) is a failed result naming the error: never a crash of
the drill and never a pass. The busybox commands the runner uses and the parsing of their output
are here too, so the drill's part stays a few lines.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal, Protocol

from restoredrill.drill.data import mount_path
from restoredrill.errors import ConfigError, RestoreDrillError

KINDS = ("sql", "http", "file")
# key -> (the words a sentence uses, the comparison)
BOUNDS: Mapping[str, tuple[str, Callable[[Decimal, Decimal], bool]]] = {
    "greater_than": ("more than", lambda value, bound: value > bound),
    "at_least": ("at least", lambda value, bound: value >= bound),
    "less_than": ("less than", lambda value, bound: value < bound),
    "at_most": ("at most", lambda value, bound: value <= bound),
}
KEYS: Mapping[str, frozenset[str]] = {
    "sql": frozenset({"name", "sql", "database", "expect", *BOUNDS}),
    "http": frozenset({"name", "http", "status"}),
    "file": frozenset({"name", "file", "min_bytes"}),
}
EXAMPLE = ('checks: [{sql: "SELECT count(*) FROM assets", greater_than: 0}, '
           '{http: "http://web.NAMESPACE.svc:80/health", status: 200}, {file: "CLAIM:/path/in/volume"}]')
# A claim's name: a DNS subdomain, as Kubernetes requires.
_CLAIM = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_DERIVED_NAME_LENGTH = 60


class CheckRunError(RestoreDrillError):
    """A check could not get what it compares (no such database, no HTTP answer, ...): reported as
    a failed result, with this text."""


# ---- the checks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """`greater_than: 0` and its kin: a numeric limit on a query's value."""

    key: str  # one of BOUNDS
    limit: Decimal

    def holds(self, value: Decimal) -> bool:
        return BOUNDS[self.key][1](value, self.limit)

    def __str__(self) -> str:
        return f"{BOUNDS[self.key][0]} {self.limit}"


@dataclass(frozen=True)
class SqlCheck:
    """A query whose single value must equal `expect` (trimmed text) or satisfy every bound."""

    kind: ClassVar[str] = "sql"
    name: str
    query: str
    database: str | None = None  # a CNPG Cluster or in-pod MySQL workload; None: the app's only database
    expect: str | None = None
    bounds: tuple[Bound, ...] = ()

    @property
    def expected(self) -> str:
        return self.expect if self.expect is not None else " and ".join(str(b) for b in self.bounds)


@dataclass(frozen=True)
class HttpCheck:
    """A GET of `url` from inside the app's namespace; the final status (after redirects) must be `status`."""

    kind: ClassVar[str] = "http"
    name: str
    url: str
    status: int = 200

    @property
    def expected(self) -> str:
        return str(self.status)


@dataclass(frozen=True)
class FileCheck:
    """A regular file (a symlink to one counts) at `path` inside the volume of claim `claim`."""

    kind: ClassVar[str] = "file"
    name: str
    claim: str
    path: str  # absolute within the volume, normalised: "/restoredrill-seed/small.txt"
    min_bytes: int = 0

    @property
    def expected(self) -> str:
        return f"exists, at least {self.min_bytes} bytes" if self.min_bytes else "exists"


Check = SqlCheck | HttpCheck | FileCheck


class CheckRunner(Protocol):
    """What a drill provides to run checks against the restored app."""

    def sql(self, database: str | None, query: str) -> str:
        """The text of the query's single value (raise when it returns no row or several)."""
        ...

    def http_status(self, url: str) -> int:
        """The final HTTP status of a GET of `url` (raise when there is no HTTP answer at all)."""
        ...

    def file_size(self, claim: str, path: str) -> int | None:
        """The size in bytes of the regular file at `path` in claim `claim`'s volume; None: missing."""
        ...


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str
    passed: bool
    observed: str  # what the check saw ("" when it could not run)
    expected: str
    sentence: str  # one line for the report, pass or fail
    error: str | None = None  # why the check could not run

    def facts(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "passed": self.passed, "observed": self.observed,
                "expected": self.expected, "sentence": self.sentence, "error": self.error}


# ---- running -----------------------------------------------------------------------------------
def run_checks(checks: Sequence[Check], runner: CheckRunner) -> list[CheckResult]:
    """Every check's result, in order; a runner exception fails that check only."""
    results = []
    for check in checks:
        try:
            results.append(_run(check, runner))
        except Exception as error:  # any failure to observe is a failed check, reported, never a crash
            text = str(error) if isinstance(error, RestoreDrillError) else f"{type(error).__name__}: {error}"
            results.append(CheckResult(
                name=check.name, kind=check.kind, passed=False, observed="", expected=check.expected,
                sentence=f"check {check.name!r} ({check.kind}) could not run: {text.strip()}", error=text.strip()))
    return results


def problems(results: Sequence[CheckResult]) -> list[str]:
    """The sentences of the failed checks: what the drill fails with."""
    return [result.sentence for result in results if not result.passed]


def _run(check: Check, runner: CheckRunner) -> CheckResult:
    if isinstance(check, SqlCheck):
        return _judge_sql(check, runner.sql(check.database, check.query))
    if isinstance(check, HttpCheck):
        return _judge_http(check, runner.http_status(check.url))
    return _judge_file(check, runner.file_size(check.claim, check.path))


def _result(check: Check, *, passed: bool, observed: str, detail: str) -> CheckResult:
    verdict = "" if passed else " failed"
    return CheckResult(name=check.name, kind=check.kind, passed=passed, observed=observed,
                       expected=check.expected, sentence=f"check {check.name!r}{verdict}: {detail}")


def _judge_sql(check: SqlCheck, value: str) -> CheckResult:
    observed = value.strip()
    said = f"`{' '.join(check.query.split())}` returned {observed!r}"
    if check.expect is not None:
        passed = observed == check.expect
        return _result(check, passed=passed, observed=observed,
                       detail=f"{said}" if passed else f"{said}, expected {check.expect!r}")
    number = _decimal(observed)
    if number is None:
        return _result(check, passed=False, observed=observed,
                       detail=f"{said}, not a number, expected {check.expected}")
    unmet = [bound for bound in check.bounds if not bound.holds(number)]
    return _result(check, passed=not unmet, observed=observed,
                   detail=f"{said} ({check.expected})" if not unmet else
                   f"{said}, expected {' and '.join(str(b) for b in unmet)}")


def _judge_http(check: HttpCheck, status: int) -> CheckResult:
    said = f"GET {check.url} answered {status}"
    passed = status == check.status
    return _result(check, passed=passed, observed=str(status),
                   detail=said if passed else f"{said}, expected {check.status}")


def _judge_file(check: FileCheck, size: int | None) -> CheckResult:
    where = f"{check.path} in PVC {check.claim}"
    if size is None:
        return _result(check, passed=False, observed="missing", detail=f"{where} is missing")
    passed = size >= check.min_bytes
    detail = f"{where} is {size} bytes" + (f", expected at least {check.min_bytes}" if not passed else "")
    return _result(check, passed=passed, observed=f"{size} bytes", detail=detail)


def _decimal(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


# ---- parsing the drill config ------------------------------------------------------------------
def parse_checks(value: Any, *, source: str, app: str) -> tuple[Check, ...]:
    """`apps.<app>.checks` of the drill config; a ConfigError names `source`, the item and the fix."""
    if value is None:
        return ()
    key = f"apps.{app}.checks"
    if not isinstance(value, list):
        raise ConfigError(f"{source}: {key} must be a list of checks", remedy=f"write {EXAMPLE}")
    checks: list[Check] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"{source}: {key}[{index}]"
        check = _parse_check(item, where=where)
        if check.name in seen:
            raise ConfigError(f"{where}: the name {check.name!r} is already that of {key}[{seen[check.name]}]",
                              remedy="give each check its own name: (it is how the report tells them apart)")
        seen[check.name] = index
        checks.append(check)
    return tuple(checks)


def _parse_check(item: Any, *, where: str) -> Check:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a mapping, not {type(item).__name__}",
                          remedy="give one of sql:, http: or file: with its expectation, e.g. "
                                 "{sql: \"SELECT count(*) FROM assets\", greater_than: 0}")
    kinds = [kind for kind in KINDS if kind in item]
    if not kinds:
        unknown = sorted(str(k) for k in item if not any(str(k) in keys for keys in KEYS.values()))
        hint = (f" (unknown key {unknown[0]!r}{_did_you_mean(unknown[0], KINDS)})" if unknown else "")
        raise ConfigError(f"{where} names no check{hint}",
                          remedy="give exactly one of sql: QUERY, http: URL or file: CLAIM:PATH")
    if len(kinds) > 1:
        raise ConfigError(f"{where} has both {kinds[0]} and {kinds[1]}: an item is one check",
                          remedy=f"split it into {len(kinds)} items of the list, one for each")
    kind = kinds[0]
    for key in item:
        if key not in KEYS[kind]:
            raise ConfigError(f"{where}: unknown key {str(key)!r} for a {kind} check"
                              f"{_did_you_mean(str(key), KEYS[kind])}",
                              remedy=f"{kind} checks take: {', '.join(sorted(KEYS[kind]))}")
    name = item.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"{where}: name must be a non-empty text", remedy="write name: WHAT IT PROVES, or drop it")
    if kind == "sql":
        return _parse_sql(item, where=where, name=name)
    if kind == "http":
        return _parse_http(item, where=where, name=name)
    return _parse_file(item, where=where, name=name)


def _parse_sql(item: Mapping[str, Any], *, where: str, name: str | None) -> SqlCheck:
    query = item["sql"]
    if not isinstance(query, str) or not query.strip():
        raise ConfigError(f"{where}: sql must be the query's text", remedy='write sql: "SELECT count(*) FROM TABLE"')
    database = item.get("database")
    if database is not None and (not isinstance(database, str) or not database.strip()):
        raise ConfigError(f"{where}: database must name a CNPG Cluster or a MySQL/MariaDB workload of the app",
                          remedy="write database: NAME (or cnpg:NAME / mysql:NAME), or drop it when the app has "
                                 "one database")
    given = [key for key in BOUNDS if key in item]
    expect = item.get("expect")
    if "expect" in item and given:
        raise ConfigError(f"{where} gives both expect and {given[0]}: a query has one expectation",
                          remedy="use expect: for an exact value, or bounds (greater_than, at_least, less_than, "
                                 "at_most) for a number")
    if "expect" not in item and not given:
        raise ConfigError(f"{where}: the sql check gives no expectation",
                          remedy="add expect: \"TEXT\" (the exact value) or a bound such as greater_than: 0")
    if "expect" in item:
        if isinstance(expect, bool | float) or not isinstance(expect, str | int):
            raise ConfigError(f"{where}: expect is {expect!r}, which YAML does not keep as the text the query returns",
                              remedy=f"quote it: expect: \"{expect}\" (or use a bound to compare numbers)")
        expect = str(expect).strip()
    bounds = tuple(Bound(key=key, limit=_bound(item[key], where=f"{where}.{key}")) for key in given)
    if _never_holds(bounds):
        raise ConfigError(f"{where}: no value is {' and '.join(str(b) for b in bounds)}",
                          remedy="fix the bounds so that some value satisfies them all")
    return SqlCheck(name=name or _derived("sql", query), query=query.strip(),
                    database=database.strip() if isinstance(database, str) else None, expect=expect, bounds=bounds)


def _bound(value: Any, *, where: str) -> Decimal:
    number = None if isinstance(value, bool) else _decimal(str(value)) if isinstance(value, int | float | str) else None
    if number is None:
        raise ConfigError(f"{where}: {value!r} is not a number",
                          remedy="write the bound as a number, e.g. greater_than: 0 (a query's text is compared "
                                 "with expect:)")
    return number


def _never_holds(bounds: Sequence[Bound]) -> bool:
    lower = [b for b in bounds if b.key in ("greater_than", "at_least")]
    upper = [b for b in bounds if b.key in ("less_than", "at_most")]
    for low in lower:
        for high in upper:
            if low.limit > high.limit:
                return True
            if low.limit == high.limit and (low.key == "greater_than" or high.key == "less_than"):
                return True
    return False


def _parse_http(item: Mapping[str, Any], *, where: str, name: str | None) -> HttpCheck:
    url = item["http"]
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^/\s:]+(:\d+)?(/\S*)?", url.strip()):
        raise ConfigError(f"{where}: http is {url!r}, not an http:// or https:// URL",
                          remedy="write the URL the app answers on inside the cluster, e.g. "
                                 "http: \"http://SERVICE.NAMESPACE.svc:PORT/health\"")
    status = item.get("status", 200)
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ConfigError(f"{where}: status is {status!r}, not an HTTP status",
                          remedy="write status: 200 (or the code the URL must answer with, 100 to 599)")
    return HttpCheck(name=name or _derived("http", url), url=url.strip(), status=status)


def _parse_file(item: Mapping[str, Any], *, where: str, name: str | None) -> FileCheck:
    spec = item["file"]
    claim, _, path = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    claim, path = claim.strip(), path.strip()
    remedy = "write file: CLAIM:PATH, the PersistentVolumeClaim's name and the path inside its volume, e.g. " \
             "file: \"pelican-data:/restoredrill-seed/small.txt\""
    if not _CLAIM.fullmatch(claim) or not path.strip("/"):
        raise ConfigError(f"{where}: file is {spec!r}, not CLAIM:PATH", remedy=remedy)
    if ".." in path.split("/"):
        raise ConfigError(f"{where}: file {spec!r} climbs out of the volume with '..'", remedy=remedy)
    min_bytes = item.get("min_bytes", 0)
    if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0:
        raise ConfigError(f"{where}: min_bytes is {min_bytes!r}, not a number of bytes",
                          remedy="write min_bytes: N, a whole number (0 or more), or drop it")
    return FileCheck(name=name or _derived("file", spec), claim=claim,
                     path=posixpath.normpath("/" + path.lstrip("/")), min_bytes=min_bytes)


def _derived(kind: str, text: str) -> str:
    words = " ".join(text.split())
    if len(words) > _DERIVED_NAME_LENGTH:
        words = words[:_DERIVED_NAME_LENGTH - 1] + "…"
    return f"{kind}: {words}"


def _did_you_mean(key: str, known: Sequence[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def claims_of(checks: Sequence[Check]) -> list[str]:
    """The claims the file checks read: what the inspector pod mounts."""
    return sorted({check.claim for check in checks if isinstance(check, FileCheck)})


# ---- what a drill's runner uses ----------------------------------------------------------------
@dataclass(frozen=True)
class DatabaseRef:
    kind: Literal["cnpg", "mysql"]
    name: str


def resolve_database(name: str | None, *, cnpg: Sequence[str], mysql: Sequence[str]) -> DatabaseRef:
    """The database a check names (`NAME`, `cnpg:NAME` or `mysql:NAME`), or the app's only one."""
    known = [DatabaseRef("cnpg", c) for c in cnpg] + [DatabaseRef("mysql", m) for m in mysql]
    listing = ", ".join(f"{d.kind}:{d.name}" for d in known) or "none"
    if name is None:
        if len(known) == 1:
            return known[0]
        if not known:
            raise CheckRunError("the app has no database (no CNPG Cluster and no in-pod MySQL/MariaDB) to query")
        raise CheckRunError(f"the app has {len(known)} databases ({listing}): the check must say which",
                            remedy="add database: NAME to the check in the drill config")
    kind, _, bare = name.partition(":") if name.startswith(("cnpg:", "mysql:")) else ("", "", name)
    matches = [d for d in known if d.name == bare and kind in ("", d.kind)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CheckRunError(f"database {name!r} is both a CNPG Cluster and a MySQL workload",
                            remedy=f"write database: cnpg:{bare} or database: mysql:{bare}")
    raise CheckRunError(f"the app has no database {name!r}; its databases: {listing}",
                        remedy="name a CNPG Cluster or a MySQL/MariaDB workload of the app in database:")


def single_value(output: str, *, query: str) -> str:
    """The one value a query returned, from `psql -tA` or `mysql -N -B` output (one line)."""
    lines = output.rstrip("\n").split("\n") if output.strip() else []
    if len(lines) == 1:
        return lines[0].strip()
    said = f"`{' '.join(query.split())}`"
    if not lines:
        raise CheckRunError(f"{said} returned no row (or only an empty value)",
                            remedy="a check's query returns one value, e.g. SELECT count(*) FROM TABLE")
    raise CheckRunError(f"{said} returned {len(lines)} rows, not one value: {lines[:3]}",
                        remedy="make the query return one row of one value (an aggregate, or LIMIT 1)")


def wget_status_command(url: str, *, seconds: int) -> list[str]:
    """busybox `wget -S`, which prints each response's status line ("  HTTP/1.1 200 OK") on stderr,
    here sent to stdout (what kubectl returns). Redirects are followed, each printing its line.

    The limit is busybox's `timeout` applet: `wget -T` crashes Debian's busybox 1.35 (the pinned
    one) with a segmentation fault."""
    return ["sh", "-c", 'exec timeout "$0" wget -S -O /dev/null "$1" 2>&1', str(seconds), url]


# busybox `timeout` ends the command with SIGTERM: exit 128 + 15. None: kubectl's own limit.
WGET_TIMED_OUT = (143, None)
_STATUS_LINE = re.compile(r"^\s*HTTP/\d(?:\.\d)?\s+(\d{3})\b", re.MULTILINE)


def parse_wget_status(output: str, *, url: str, returncode: int | None = 0) -> int:
    """The final HTTP status in `wget_status_command`'s output. busybox exits 1 on a status of 400
    or more, after printing it: the caller passes the output and exit status of a failed command too."""
    statuses = _STATUS_LINE.findall(output)
    if statuses:
        return int(statuses[-1])
    if returncode in WGET_TIMED_OUT:
        raise CheckRunError(f"GET {url} had no answer within the time limit",
                            remedy="is the app listening? check the URL's host (SERVICE.NAMESPACE.svc) and port")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("wget:")] or lines  # not kubectl's "command terminated"
    raise CheckRunError(f"GET {url} got no HTTP answer: {said[-1] if said else 'no output'}",
                        remedy="check the URL's host (SERVICE.NAMESPACE.svc) and port, and that the app listens")


FILE_SIZE_SCRIPT = ('if [ -f "$1" ]; then stat -L -c %s "$1"; elif [ -e "$1" ]; then echo not-a-regular-file; '
                    'else echo missing; fi')


def file_size_command(claim: str, path: str) -> list[str]:
    """A shell command printing the size of `path` in `claim`'s volume (mounted as the inspector mounts it),
    `missing`, or `not-a-regular-file`."""
    return ["sh", "-c", FILE_SIZE_SCRIPT, "file-size", mount_path(claim) + path]


def parse_file_size(output: str, *, claim: str, path: str) -> int | None:
    text = output.strip()
    if text == "missing":
        return None
    if text == "not-a-regular-file":
        raise CheckRunError(f"{path} in PVC {claim} exists but is not a regular file (a folder?)",
                            remedy="name a file, not a folder, in file: CLAIM:PATH")
    if not text.isdigit():
        raise CheckRunError(f"reading the size of {path} in PVC {claim} printed {text[-200:]!r}")
    return int(text)
