"""The user's own checks (`apps.<name>.checks`): parsed with errors that name the file, the item and
the fix; judged against a fake runner, every kind passing and failing; a runner that raises fails
the check, it neither crashes nor passes; the busybox commands' output read as busybox prints it."""

import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from restoredrill.drill.checks import (
    Bound,
    CheckRunError,
    DatabaseRef,
    FileCheck,
    HttpCheck,
    SqlCheck,
    claims_of,
    file_size_command,
    parse_checks,
    parse_file_size,
    parse_wget_status,
    problems,
    resolve_database,
    run_checks,
    single_value,
    wget_status_command,
)
from restoredrill.errors import ConfigError

SOURCE = "/repo/restoredrill.yaml"


def parse(*items: Any) -> tuple[Any, ...]:
    return parse_checks(list(items), source=SOURCE, app="pelican")


class FakeRunner:
    """Answers from tables; an Exception value is raised, as a failing kubectl or psql would."""

    def __init__(self, *, sql: Mapping[str, str | Exception] | None = None,
                 http: Mapping[str, int | Exception] | None = None,
                 files: Mapping[str, int | Exception | None] | None = None) -> None:
        self.answers_sql, self.answers_http, self.answers_files = sql or {}, http or {}, files or {}
        self.calls: list[tuple[str, ...]] = []

    def sql(self, database: str | None, query: str) -> str:
        self.calls.append(("sql", str(database), query))
        answer = self.answers_sql[query]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def http_status(self, url: str) -> int:
        self.calls.append(("http", url))
        answer = self.answers_http[url]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def file_size(self, claim: str, path: str) -> int | None:
        self.calls.append(("file", claim, path))
        answer = self.answers_files[f"{claim}:{path}"]
        if isinstance(answer, Exception):
            raise answer
        return answer


# ---- parsing -----------------------------------------------------------------------------------
def test_each_kind_parses_with_its_defaults() -> None:
    sql, http, file = parse(
        {"sql": "SELECT count(*)\n  FROM assets", "greater_than": 0},
        {"http": "http://pelican-panel.pelican.svc:80/health"},
        {"file": "pelican-data:restoredrill-seed//small.txt", "min_bytes": 10, "name": "seed file"},
    )
    assert sql == SqlCheck(name="sql: SELECT count(*) FROM assets", query="SELECT count(*)\n  FROM assets",
                           bounds=(Bound("greater_than", Decimal(0)),))
    assert http == HttpCheck(name="http: http://pelican-panel.pelican.svc:80/health",
                             url="http://pelican-panel.pelican.svc:80/health", status=200)
    assert file == FileCheck(name="seed file", claim="pelican-data", path="/restoredrill-seed/small.txt",
                             min_bytes=10)
    assert claims_of([sql, http, file]) == ["pelican-data"]


def test_sql_options_parse() -> None:
    exact, ranged, named = parse(
        {"sql": "SELECT version FROM schema", "expect": " 42 ", "database": "immich-postgres"},
        {"sql": "SELECT count(*) FROM users", "at_least": "1", "at_most": 1.5e3},
        {"sql": "SELECT 1", "expect": "1", "name": "db answers"},
    )
    assert (exact.expect, exact.database, exact.bounds) == ("42", "immich-postgres", ())
    assert ranged.bounds == (Bound("at_least", Decimal(1)), Bound("at_most", Decimal("1500.0")))
    assert ranged.expected == "at least 1 and at most 1500.0"
    assert named.name == "db answers"
    assert parse({"sql": "SELECT count(*) FROM t", "expect": 7})[0].expect == "7"  # an int is its own text
    assert parse({"http": "https://x.y.svc/", "status": "204"})[0].status == 204
    assert parse_checks(None, source=SOURCE, app="pelican") == ()


def test_a_long_query_gets_a_short_derived_name() -> None:
    name = parse({"sql": "SELECT " + ", ".join(f"c{i}" for i in range(50)) + " FROM t", "expect": "x"})[0].name
    assert name.startswith("sql: SELECT c0, c1") and name.endswith("…") and len(name) == len("sql: ") + 60


@pytest.mark.parametrize(("checks", "expected"), [
    ("not a list", ["apps.pelican.checks must be a list", "fix: write checks: [{sql:"]),
    (["SELECT 1"], ["apps.pelican.checks[0] must be a mapping, not str", "fix: give one of sql:, http: or file:"]),
    ([{"name": "x"}], ["checks[0] names no check", "fix: give exactly one of sql: QUERY, http: URL or file:"]),
    ([{"sq": "SELECT 1"}], ["checks[0] names no check (unknown key 'sq' (did you mean 'sql'?))"]),
    ([{"http": "http://a/"}, {"sql": "SELECT 1", "http": "http://a/", "expect": "1"}],
     ["checks[1] has both sql and http: an item is one check", "fix: split it into 2 items"]),
    ([{"sql": "SELECT 1", "expect": "1", "statu": 200}],
     ["checks[0]: unknown key 'statu' for a sql check", "fix: sql checks take: at_least, at_most, database, expect"]),
    ([{"sql": "SELECT 1", "greater_then": 0}],
     ["unknown key 'greater_then' for a sql check (did you mean 'greater_than'?)"]),
    ([{"http": "http://a/", "min_bytes": 3}], ["unknown key 'min_bytes' for a http check", "http checks take:"]),
    ([{"sql": "SELECT count(*) FROM assets", "greater_than": "zero"}],
     ["checks[0].greater_than: 'zero' is not a number", "fix: write the bound as a number"]),
    ([{"sql": "SELECT 1", "at_most": True}], ["checks[0].at_most: True is not a number"]),
    ([{"sql": "SELECT 1", "at_least": float("nan")}], ["at_least: nan is not a number"]),
    ([{"sql": "SELECT 1"}], ["the sql check gives no expectation", "fix: add expect:"]),
    ([{"sql": "SELECT 1", "expect": "1", "less_than": 2}], ["gives both expect and less_than", "fix: use expect:"]),
    ([{"sql": "SELECT 1", "expect": 1.50}], ["expect is 1.5", 'fix: quote it: expect: "1.5"']),
    ([{"sql": "SELECT 1", "greater_than": 5, "less_than": 3}], ["no value is more than 5 and less than 3"]),
    ([{"sql": "SELECT 1", "at_least": 5, "less_than": 5}], ["no value is at least 5 and less than 5"]),
    ([{"sql": ""}], ["checks[0]: sql must be the query's text"]),
    ([{"sql": "SELECT 1", "expect": "1", "database": ""}], ["database must name a CNPG Cluster"]),
    ([{"http": "pelican-panel:80/health"}], ["http is 'pelican-panel:80/health', not an http:// or https:// URL"]),
    ([{"http": "http://a/", "status": 99}], ["status is 99, not an HTTP status", "fix: write status: 200"]),
    ([{"http": "http://a/", "status": "ok"}], ["status is 'ok', not an HTTP status"]),
    ([{"file": "/restoredrill-seed/small.txt"}], ["file is '/restoredrill-seed/small.txt', not CLAIM:PATH",
                                                  "fix: write file: CLAIM:PATH"]),
    ([{"file": "pelican-data:"}], ["file is 'pelican-data:', not CLAIM:PATH"]),
    ([{"file": "pelican-data:../etc/passwd"}], ["climbs out of the volume"]),
    ([{"file": "pelican-data:/a", "min_bytes": -1}], ["min_bytes is -1, not a number of bytes"]),
    ([{"file": "pelican-data:/a", "name": ""}], ["name must be a non-empty text"]),
    ([{"file": "pelican-data:/a"}, {"file": "pelican-data:/a", "min_bytes": 2}],
     ["checks[1]: the name 'file: pelican-data:/a' is already that of apps.pelican.checks[0]",
      "fix: give each check its own name"]),
])
def test_bad_checks_name_the_file_the_item_and_the_fix(checks: Any, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_checks(checks, source=SOURCE, app="pelican")
    message = str(raised.value)
    assert message.startswith(f"{SOURCE}: apps.pelican.checks")
    assert "\n  fix: " in message
    for text in expected:
        assert text in message


# ---- running -----------------------------------------------------------------------------------
def test_sql_checks_pass_and_fail_on_the_value() -> None:
    checks = parse({"sql": "SELECT count(*) FROM assets", "greater_than": 0, "name": "assets"},
                   {"sql": "SELECT count(*) FROM users", "greater_than": 0, "name": "users"},
                   {"sql": "SELECT version", "expect": "42", "database": "mysql:db", "name": "version"},
                   {"sql": "SELECT label", "expect": "v1", "name": "label"})
    runner = FakeRunner(sql={"SELECT count(*) FROM assets": "1000\n", "SELECT count(*) FROM users": "0",
                             "SELECT version": " 42 ", "SELECT label": "v2"})
    assets, users, version, label = run_checks(checks, runner)
    assert (assets.passed, assets.observed, assets.expected) == (True, "1000", "more than 0")
    assert assets.sentence == "check 'assets': `SELECT count(*) FROM assets` returned '1000' (more than 0)"
    assert not users.passed
    assert users.sentence == "check 'users' failed: `SELECT count(*) FROM users` returned '0', expected more than 0"
    assert version.passed and (version.observed, version.expected) == ("42", "42")
    assert not label.passed and label.sentence.endswith("returned 'v2', expected 'v1'")
    assert ("sql", "mysql:db", "SELECT version") in runner.calls
    assert problems([assets, users, version, label]) == [users.sentence, label.sentence]


@pytest.mark.parametrize(("bounds", "value", "passed"), [
    ({"greater_than": 0}, "1", True), ({"greater_than": 0}, "0", False),
    ({"at_least": 3}, "3", True), ({"at_least": 3}, "2.999", False),
    ({"less_than": 10}, "9.5", True), ({"less_than": 10}, "10", False),
    ({"at_most": "1e3"}, "1000", True), ({"at_most": 1000}, "1000.01", False),
    ({"at_least": 1, "at_most": 5}, "5", True), ({"at_least": 1, "at_most": 5}, "6", False),
    ({"greater_than": -1}, "-0.5", True),
    ({"greater_than": 0}, "12345678901234567890123", True),  # decimal, not float: no rounding
    ({"at_least": "0.3"}, "0.30000000000000000001", True),
    ({"greater_than": 0}, "many", False), ({"greater_than": 0}, "NaN", False), ({"greater_than": 0}, "", False),
])
def test_bounds_compare_as_decimal_numbers(bounds: dict[str, Any], value: str, passed: bool) -> None:
    check = parse({"sql": "SELECT n", **bounds})[0]
    result = run_checks([check], FakeRunner(sql={"SELECT n": value}))[0]
    assert result.passed is passed
    if value in ("many", "NaN", ""):
        assert "not a number" in result.sentence


def test_only_the_unmet_bound_is_named() -> None:
    check = parse({"sql": "SELECT n", "at_least": 1, "at_most": 5})[0]
    result = run_checks([check], FakeRunner(sql={"SELECT n": "9"}))[0]
    assert result.sentence.endswith("returned '9', expected at most 5")
    assert result.expected == "at least 1 and at most 5"


def test_http_checks_pass_and_fail_on_the_status() -> None:
    checks = parse({"http": "http://web.pelican.svc/health"}, {"http": "http://web.pelican.svc/gone", "status": 404},
                   {"http": "http://web.pelican.svc/api"})
    ok, gone, api = run_checks(checks, FakeRunner(http={"http://web.pelican.svc/health": 200,
                                                        "http://web.pelican.svc/gone": 404,
                                                        "http://web.pelican.svc/api": 503}))
    assert ok.passed
    assert ok.sentence == "check 'http: http://web.pelican.svc/health': GET http://web.pelican.svc/health answered 200"
    assert gone.passed and gone.expected == "404"
    assert not api.passed and api.observed == "503"
    assert api.sentence.endswith("GET http://web.pelican.svc/api answered 503, expected 200")


def test_file_checks_pass_and_fail_on_presence_and_size() -> None:
    checks = parse({"file": "data:/seed/small.txt", "name": "small"}, {"file": "data:/seed/empty", "name": "empty"},
                   {"file": "data:/config.yml", "min_bytes": 100, "name": "config"},
                   {"file": "data:/gone", "name": "gone"})
    runner = FakeRunner(files={"data:/seed/small.txt": 27, "data:/seed/empty": 0, "data:/config.yml": 99,
                               "data:/gone": None})
    small, empty, config, gone = run_checks(checks, runner)
    assert small.passed and small.sentence == "check 'small': /seed/small.txt in PVC data is 27 bytes"
    assert empty.passed and empty.observed == "0 bytes"  # existing is enough without min_bytes
    assert not config.passed
    assert config.sentence == "check 'config' failed: /config.yml in PVC data is 99 bytes, expected at least 100"
    assert config.expected == "exists, at least 100 bytes"
    assert not gone.passed and gone.sentence == "check 'gone' failed: /gone in PVC data is missing"
    assert gone.observed == "missing"


def test_a_runner_exception_is_a_failed_result_not_a_crash_or_a_pass() -> None:
    checks = parse({"sql": "SELECT count(*) FROM assets", "greater_than": 0, "name": "assets"},
                   {"http": "http://web.pelican.svc/", "name": "web"},
                   {"file": "data:/a", "name": "a"}, {"file": "data:/b", "name": "b"})
    runner = FakeRunner(sql={"SELECT count(*) FROM assets": CheckRunError("the app has 2 databases",
                                                                          remedy="add database: NAME")},
                        http={"http://web.pelican.svc/": RuntimeError("kubectl exec timed out")},
                        files={"data:/a": KeyError("data"), "data:/b": 5})
    assets, web, a, b = run_checks(checks, runner)
    assert not assets.passed and assets.observed == ""
    assert assets.sentence == ("check 'assets' (sql) could not run: the app has 2 databases\n"
                               "  fix: add database: NAME")
    assert not web.passed and web.error == "RuntimeError: kubectl exec timed out"
    assert not a.passed and "KeyError" in a.sentence
    assert b.passed  # the checks after a failing one still run
    assert problems([assets, web, a, b]) == [assets.sentence, web.sentence, a.sentence]
    assert web.facts() == {"name": "web", "kind": "http", "passed": False, "observed": "", "expected": "200",
                           "sentence": web.sentence, "error": "RuntimeError: kubectl exec timed out"}


# ---- the runner's helpers ----------------------------------------------------------------------
def test_the_database_is_named_or_the_only_one() -> None:
    assert resolve_database(None, cnpg=["immich-postgres"], mysql=[]) == DatabaseRef("cnpg", "immich-postgres")
    assert resolve_database(None, cnpg=[], mysql=["mariadb"]) == DatabaseRef("mysql", "mariadb")
    assert resolve_database("mariadb", cnpg=["pg"], mysql=["mariadb"]) == DatabaseRef("mysql", "mariadb")
    assert resolve_database("cnpg:db", cnpg=["db"], mysql=["db"]) == DatabaseRef("cnpg", "db")
    with pytest.raises(CheckRunError, match=r"2 databases \(cnpg:pg, mysql:mariadb\).*\n  fix: add database:"):
        resolve_database(None, cnpg=["pg"], mysql=["mariadb"])
    with pytest.raises(CheckRunError, match="no database"):
        resolve_database(None, cnpg=[], mysql=[])
    with pytest.raises(CheckRunError, match="no database 'other'; its databases: cnpg:pg"):
        resolve_database("other", cnpg=["pg"], mysql=[])
    with pytest.raises(CheckRunError, match="both a CNPG Cluster and a MySQL workload"):
        resolve_database("db", cnpg=["db"], mysql=["db"])


def test_a_query_returns_one_value() -> None:
    assert single_value("42\n", query="SELECT 1") == "42"
    assert single_value(" v1 ", query="SELECT 1") == "v1"
    with pytest.raises(CheckRunError, match="returned no row"):
        single_value("", query="SELECT x FROM empty")
    with pytest.raises(CheckRunError, match=r"returned 3 rows, not one value: \['1', '2', '3'\]"):
        single_value("1\n2\n3\n", query="SELECT id FROM t")


# busybox 1.35 `wget -S -O /dev/null URL`, output recorded against a local server (stdout and stderr).
WGET_OK = """Connecting to 127.0.0.1:38517 (127.0.0.1:38517)
  HTTP/1.0 200 OK
  Server: BaseHTTP/0.6 Python/3.11.7
  Date: Tue, 01 Dec 2026 23:42:33 GMT

saving to '/dev/null'
null                 100% |********************************|     2  0:00:00 ETA
'/dev/null' saved
"""
WGET_REDIRECT = """Connecting to 127.0.0.1:38517 (127.0.0.1:38517)
  HTTP/1.0 302 Found
  Location: /ok
  HTTP/1.1 204 No Content

saving to '/dev/null'
'/dev/null' saved
"""
WGET_404 = """Connecting to 127.0.0.1:38517 (127.0.0.1:38517)
  HTTP/1.0 404 Not Found
wget: server returned error: HTTP/1.0 404 Not Found
command terminated with exit code 1
"""
WGET_REFUSED = """Connecting to 127.0.0.1:38518 (127.0.0.1:38518)
wget: can't connect to remote host (127.0.0.1): Connection refused
command terminated with exit code 1
"""


def test_the_http_status_is_read_from_busybox_wget() -> None:
    assert wget_status_command("http://a/", seconds=30)[-2:] == ["30", "http://a/"]
    assert parse_wget_status(WGET_OK, url="u") == 200
    assert parse_wget_status(WGET_REDIRECT, url="u") == 204  # the last response's
    assert parse_wget_status(WGET_404, url="u") == 404
    with pytest.raises(CheckRunError, match=r"GET u got no HTTP answer: wget: can't connect to remote host \(127"):
        parse_wget_status(WGET_REFUSED, url="u")
    with pytest.raises(CheckRunError, match="GET u got no HTTP answer: wget: bad address 'x'"):
        parse_wget_status("wget: bad address 'x'\n", url="u")
    with pytest.raises(CheckRunError, match="no answer within the time limit"):
        parse_wget_status("Connecting to a (1.2.3.4:80)\n", url="u", returncode=143)


def test_the_file_size_is_read_from_the_script() -> None:
    assert file_size_command("data", "/seed/a b.txt")[-1] == "/volumes/data/seed/a b.txt"
    assert parse_file_size("27\n", claim="data", path="/a") == 27
    assert parse_file_size("missing\n", claim="data", path="/a") is None
    with pytest.raises(CheckRunError, match="/d in PVC data exists but is not a regular file"):
        parse_file_size("not-a-regular-file\n", claim="data", path="/d")
    with pytest.raises(CheckRunError, match="printed 'stat: boom'"):
        parse_file_size("stat: boom", claim="data", path="/a")


BUSYBOX = Path("/bin/busybox")


@pytest.mark.skipif(not BUSYBOX.is_file(), reason="no busybox on this machine")
def test_the_file_size_script_runs_in_busybox(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f.txt").write_text("hello\n")
    (tmp_path / "with space").write_text("x")
    (tmp_path / "link").symlink_to("f.txt")
    (tmp_path / "dangling").symlink_to("/nonexistent/target")
    script = file_size_command("c", "/x")[2]

    def size(name: str) -> int | None:
        done = subprocess.run([str(BUSYBOX), "sh", "-c", script, "file-size", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=30, check=True)
        return parse_file_size(done.stdout, claim="c", path=f"/{name}")

    assert (size("f.txt"), size("with space"), size("link")) == (6, 1, 6)
    assert size("dangling") is None and size("nothing") is None
    with pytest.raises(CheckRunError, match="not a regular file"):
        size("d")


class _Answers(BaseHTTPRequestHandler):
    """/NNN answers status NNN; /redirect sends to /204."""

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/204")
        else:
            self.send_response(int(self.path.strip("/")))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not BUSYBOX.is_file(), reason="no busybox on this machine")
def test_the_wget_command_reads_the_status_busybox_answers_with() -> None:
    def status(url: str) -> int:
        # busybox's shell runs its own applets (timeout, wget), as in the inspector pod
        done = subprocess.run([str(BUSYBOX), *wget_status_command(url, seconds=10)], capture_output=True, text=True,
                              timeout=30, check=False, env={"PATH": "/nonexistent"})
        return parse_wget_status(done.stdout, url=url, returncode=done.returncode)

    with _server() as base:
        assert [status(f"{base}/{code}") for code in (200, 204, 404, 503)] == [200, 204, 404, 503]
        assert status(f"{base}/redirect") == 204
    with pytest.raises(CheckRunError, match="got no HTTP answer: wget: can't connect"):
        status(base)  # the server is gone
