"""Build pinned Go binaries into the cache, once.

Each recipe gets a wrapper module in `CACHE/src/NAME-VERSION` that requires the pinned module and
repeats the replace directives it needs (`go install pkg@version` refuses modules with replaces,
and k8s.io/kubernetes replaces every staging module with a path inside its own tree). The binaries
land in `CACHE/bin/NAME-VERSION/`, and a stamp file keyed by a digest of the recipe and the Go
version records that they are complete: a matching stamp skips the build (idempotent); a missing
one rebuilds, and Go's module and build caches make a rebuild after an interrupted run resume
roughly where it stopped.

Builds of one component are serialised across processes by a file lock in `CACHE/locks/`: a second
`restoredrill toolchain` (or a test session) waits for the first, says so, and then finds the stamp.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from restoredrill.errors import CommandError, ConfigError, MissingToolError, WaitTimeout
from restoredrill.pins import cache_dir
from restoredrill.process import download_go_module, run
from restoredrill.toolchain.recipes import WRAPPER_MAIN, GoBuild, load_recipes, recipe_for_binary
from restoredrill.waits import wait_until

GO_REMEDY = (
    "install Go 1.24 or newer (Debian: `apt-get install golang-1.24` from bookworm-backports, or the "
    "golang.org tarball) and put `go` on PATH"
)
# Environment for every build: static binaries, module mode free to complete go.sum.
BUILD_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
# A build may take this many times its expected duration before it counts as hung.
BUILD_TIMEOUT_FACTOR = 4
MIN_BUILD_TIMEOUT = 20 * 60
# Progress while a long build runs: one line per this many seconds.
HEARTBEAT_SECONDS = 60

Printer = Callable[[str], None]


def _print(line: str) -> None:
    print(f"[toolchain] {line}", flush=True)


@dataclass(frozen=True)
class BuildOutcome:
    name: str
    version: str
    built: bool  # False: the stamp said it was already there
    seconds: float
    bin_dir: Path


class GoToolchain:
    """Builds and finds the pinned Go binaries in the cache."""

    def __init__(
        self,
        *,
        cache: Path | None = None,
        recipes: dict[str, GoBuild] | None = None,
        out: Printer = _print,
    ) -> None:
        self.cache = cache or cache_dir()
        self.recipes = recipes if recipes is not None else load_recipes()
        self.out = out

    # ---- where things live ------------------------------------------------------------------
    def wrapper_dir(self, recipe: GoBuild) -> Path:
        return self.cache / "src" / f"{recipe.name}-{recipe.version}"

    def bin_dir(self, recipe: GoBuild) -> Path:
        return self.cache / "bin" / f"{recipe.name}-{recipe.version}"

    def stamp_path(self, recipe: GoBuild) -> Path:
        return self.cache / "stamps" / f"{recipe.name}.json"

    def log_path(self, recipe: GoBuild) -> Path:
        return self.cache / "logs" / f"build-{recipe.name}.log"

    def lock_path(self, recipe: GoBuild) -> Path:
        return self.cache / "locks" / f"build-{recipe.name}.lock"

    # ---- queries ----------------------------------------------------------------------------
    def go(self) -> str:
        found = shutil.which("go")
        if found is None:
            raise MissingToolError("go", remedy=GO_REMEDY)
        return found

    def go_version(self) -> str:
        return self._run([self.go(), "env", "GOVERSION"], cwd=None, timeout=60).strip()

    def read_stamp(self, recipe: GoBuild) -> dict[str, object] | None:
        try:
            data = json.loads(self.stamp_path(recipe).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def is_built(self, recipe: GoBuild, *, go_version: str) -> bool:
        """True when the stamp matches this recipe and Go, and every binary is still there."""
        stamp = self.read_stamp(recipe)
        if stamp is None or stamp.get("key") != recipe.stamp_key(go_version=go_version):
            return False
        return all((self.bin_dir(recipe) / binary).is_file() for binary in recipe.binaries)

    def binary(self, name: str) -> Path:
        """Path of a built binary (kubelet, etcd, ...); says how to build it when it is missing."""
        recipe = recipe_for_binary(name, self.recipes)
        path = self.bin_dir(recipe) / name
        if not path.is_file():
            raise MissingToolError(
                str(path), remedy=f"run `restoredrill toolchain --only {recipe.name}` to build it"
            )
        return path

    # ---- building ---------------------------------------------------------------------------
    def ensure(self, names: list[str] | None = None) -> list[BuildOutcome]:
        """Build the named recipes (default: every recipe not marked `default = false`)."""
        if names:
            unknown = sorted(set(names) - set(self.recipes))
            if unknown:
                raise ConfigError(
                    f"unknown toolchain component(s): {', '.join(unknown)}",
                    remedy=f"choose from: {', '.join(sorted(self.recipes))}",
                )
            selected = [self.recipes[name] for name in names]
        else:
            selected = [recipe for recipe in self.recipes.values() if recipe.default]
        go_version = self.go_version()
        return [self.build(recipe, go_version=go_version) for recipe in selected]

    def build(self, recipe: GoBuild, *, go_version: str, force: bool = False) -> BuildOutcome:
        if not force and self.is_built(recipe, go_version=go_version):
            self.out(f"{recipe.name} {recipe.version}: up to date in {self.bin_dir(recipe)}")
            return BuildOutcome(recipe.name, recipe.version, False, 0.0, self.bin_dir(recipe))
        with self.build_lock(recipe):
            if not force and self.is_built(recipe, go_version=go_version):
                self.out(f"{recipe.name} {recipe.version}: built by another run meanwhile, in {self.bin_dir(recipe)}")
                return BuildOutcome(recipe.name, recipe.version, False, 0.0, self.bin_dir(recipe))
            return self._build(recipe, go_version=go_version)

    @contextlib.contextmanager
    def build_lock(self, recipe: GoBuild) -> Iterator[None]:
        """Hold the build of `recipe` for this process; wait (and say who holds it) while another has it.

        The holder's pid is in a file beside the lock: filelock truncates the lock file itself on open.
        """
        path = self.lock_path(recipe)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock, owner = FileLock(str(path)), path.with_suffix(".owner")

        reported: list[str] = []

        def acquired() -> tuple[bool | None, str]:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                holder = owner.read_text().strip() if owner.exists() else "unknown"
                if holder not in reported:
                    self.out(f"waiting for another build of {recipe.name} (pid {holder})")
                    reported.append(holder)
                return None, f"pid {holder} holds {path}"
            return True, "acquired"

        wait_until(f"another build of {recipe.name}", acquired, timeout=self.build_timeout(recipe), interval=1.0,
                   remedy=f"another `restoredrill toolchain` holds {path}; stop it, or wait for it")
        try:
            owner.write_text(f"{os.getpid()}\n")
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def build_timeout(self, recipe: GoBuild) -> float:
        return max(MIN_BUILD_TIMEOUT, recipe.expected_minutes * 60 * BUILD_TIMEOUT_FACTOR)

    def _build(self, recipe: GoBuild, *, go_version: str) -> BuildOutcome:
        self.out(
            f"building {recipe.name} {recipe.version} ({', '.join(recipe.binaries)}) — about "
            f"{recipe.expected_minutes:g} min on 2 cores when cold; log: {self.log_path(recipe)}"
        )
        started = time.monotonic()
        wrapper = self.write_wrapper(recipe)
        partial = self.bin_dir(recipe).with_name(self.bin_dir(recipe).name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self._go_build(recipe, wrapper=wrapper, out_dir=partial)
        final = self.bin_dir(recipe)
        final.mkdir(parents=True, exist_ok=True)
        for binary in recipe.binaries:
            built = partial / binary
            if not built.is_file():
                raise CommandError(
                    ["go", "build", *recipe.binaries.values()],
                    returncode=0,
                    output=f"go build succeeded but {built} is missing",
                    remedy="check that the import path in pins.toml is a main package",
                )
            os.replace(built, final / binary)
        shutil.rmtree(partial, ignore_errors=True)
        seconds = time.monotonic() - started
        self.stamp_path(recipe).parent.mkdir(parents=True, exist_ok=True)
        self.stamp_path(recipe).write_text(
            json.dumps(
                {
                    "key": recipe.stamp_key(go_version=go_version),
                    "name": recipe.name,
                    "version": recipe.version,
                    "go": go_version,
                    "binaries": sorted(recipe.binaries),
                    "seconds": round(seconds, 1),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
            )
        )
        self.out(f"built {recipe.name} {recipe.version} in {seconds / 60:.1f} min -> {final}")
        return BuildOutcome(recipe.name, recipe.version, True, seconds, final)

    def wrapper_go_mod(self, recipe: GoBuild, *, upstream_replaces: list[dict[str, dict[str, str]]],
                       go_directive: str) -> str:
        """go.mod of the wrapper module: require the pin, repeat the replaces it needs."""
        lines = [f"module restoredrill.local/build/{recipe.name}", "", f"go {go_directive}", ""]
        requires = dict(recipe.extra_requires)
        if recipe.module:
            requires[recipe.module] = recipe.version
        if requires:
            lines.append("require (")
            lines += [f"\t{path} {version}" for path, version in sorted(requires.items())]
            lines += [")", ""]
        replaces: dict[str, str] = {}
        for entry in upstream_replaces:
            old, new = entry["Old"]["Path"], entry["New"]
            if new["Path"].startswith((".", "/")):
                # Points into upstream's own tree, which a dependency cannot see.
                if recipe.local_replace_version:
                    replaces[old] = f"{old} {recipe.local_replace_version}"
            elif new.get("Version"):
                replaces[old] = f"{new['Path']} {new['Version']}"
        replaces.update(recipe.extra_replaces)
        if replaces:
            lines.append("replace (")
            lines += [f"\t{old} => {new}" for old, new in sorted(replaces.items())]
            lines += [")", ""]
        return "\n".join(lines)

    def write_wrapper(self, recipe: GoBuild) -> Path:
        wrapper = self.wrapper_dir(recipe)
        wrapper.mkdir(parents=True, exist_ok=True)
        upstream_replaces: list[dict[str, dict[str, str]]] = []
        go_directive = "1.24.0"
        if recipe.module:
            info = download_go_module(recipe.module, recipe.version, go=self.go(), cwd=wrapper,
                                      env={**os.environ, **BUILD_ENV})
            upstream = json.loads(self._run([self.go(), "mod", "edit", "-json", info["GoMod"]],
                                            cwd=wrapper, timeout=60))
            upstream_replaces = upstream.get("Replace") or []
            go_directive = upstream.get("Go") or go_directive
            if recipe.upstream_go_sum:
                self._merge_go_sum(wrapper / "go.sum", Path(info["Dir"]) / "go.sum")
        go_mod = self.wrapper_go_mod(recipe, upstream_replaces=upstream_replaces, go_directive=go_directive)
        self._write_if_changed(wrapper / "go.mod", go_mod)
        main = recipe.generated_main()
        if main is not None:
            self._write_if_changed(wrapper / "main.go", main)
        return wrapper

    @staticmethod
    def _merge_go_sum(ours: Path, upstream: Path) -> None:
        """Union of both go.sum files (checksums only: versions are still chosen by go.mod)."""
        if not upstream.is_file():
            return
        lines = set(upstream.read_text().splitlines())
        if ours.is_file():
            lines |= set(ours.read_text().splitlines())
        ours.write_text("\n".join(sorted(line for line in lines if line.strip())) + "\n")

    @staticmethod
    def _write_if_changed(path: Path, text: str) -> None:
        # `go build -mod=mod` adds requirements to go.mod; keep its version while ours is unchanged.
        marker = path.with_name(path.name + ".restoredrill")
        if marker.exists() and marker.read_text() == text and path.exists():
            return
        path.write_text(text)
        marker.write_text(text)

    def _go_build(self, recipe: GoBuild, *, wrapper: Path, out_dir: Path) -> None:
        packages = [WRAPPER_MAIN if path == WRAPPER_MAIN else path for path in recipe.binaries.values()]
        command = [
            self.go(), "build", "-trimpath", "-ldflags", " ".join(recipe.expanded_ldflags()),
            "-o", f"{out_dir}/", *packages,
        ]
        if len(packages) == 1:
            # With one package, -o DIR/ names the binary after the import path (`v3` for etcd).
            command[command.index("-o") + 1] = str(out_dir / next(iter(recipe.binaries)))
        log = self.log_path(recipe)
        log.parent.mkdir(parents=True, exist_ok=True)
        timeout = self.build_timeout(recipe)
        started = time.monotonic()
        with log.open("w") as sink:
            sink.write(f"$ cd {wrapper} && {' '.join(command)}\n")
            sink.flush()
            process = subprocess.Popen(
                command, cwd=wrapper, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **BUILD_ENV}, start_new_session=True,
            )

            def finished() -> tuple[int | None, str]:
                code = process.poll()
                minutes = int((time.monotonic() - started) // HEARTBEAT_SECONDS)
                return code, f"{recipe.name}: {minutes} min elapsed"

            try:
                code = wait_until(
                    f"go build of {recipe.name} {recipe.version}", finished, timeout=timeout, interval=2.0,
                    on_progress=self.out,
                    remedy=f"see {log}; a rerun resumes from Go's build cache",
                )
            except (WaitTimeout, KeyboardInterrupt):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                raise
        if code != 0:
            raise CommandError(
                command, returncode=code, output=log.read_text()[-6000:],
                remedy=f"full log in {log}; a rerun resumes from Go's build cache",
            )

    def _run(self, command: list[str], *, cwd: Path | None, timeout: float, remedy: str | None = None) -> str:
        return run(command, cwd=cwd, timeout=timeout, remedy=remedy, env={**os.environ, **BUILD_ENV})
