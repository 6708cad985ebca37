"""Two toolchain builds at once: the second waits for the first, says who it waits for, and builds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from restoredrill.toolchain.gobuild import GoToolchain
from restoredrill.toolchain.recipes import GoBuild

RECIPE = GoBuild(name="demo", version="v1.2.3", module="example.com/demo",
                 binaries={"demo": "example.com/demo/cmd/demo"})


class SlowToolchain(GoToolchain):
    """`go build` replaced by a write into the `.partial` directory that waits for `release`."""

    def __init__(self, cache: Path, lines: list[str]) -> None:
        super().__init__(cache=cache, recipes={"demo": RECIPE}, out=lines.append)
        self.release = threading.Event()
        self.started = threading.Event()
        self.builds = 0

    def write_wrapper(self, recipe: GoBuild) -> Path:
        return self.wrapper_dir(recipe)

    def _go_build(self, recipe: GoBuild, *, wrapper: Path, out_dir: Path) -> None:
        self.builds += 1
        (out_dir / "demo").write_text("half")
        self.started.set()
        assert self.release.wait(timeout=30)
        (out_dir / "demo").write_text("binary")


def test_a_second_build_in_another_thread_waits_and_then_finds_the_stamp(tmp_path: Path) -> None:
    first_lines: list[str] = []
    second_lines: list[str] = []
    first, second = SlowToolchain(tmp_path, first_lines), SlowToolchain(tmp_path, second_lines)
    outcomes = {}

    def build(name: str, toolchain: SlowToolchain) -> None:
        outcomes[name] = toolchain.build(RECIPE, go_version="go1.24")

    one = threading.Thread(target=build, args=("first", first))
    one.start()
    assert first.started.wait(timeout=30)
    two = threading.Thread(target=build, args=("second", second))
    two.start()
    deadline = time.monotonic() + 30
    while not any("waiting for another build" in line for line in second_lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.release.set()
    one.join(timeout=30)
    two.join(timeout=30)

    assert f"waiting for another build of demo (pid {os.getpid()})" in second_lines
    assert first.builds == 1 and second.builds == 0, "the second run must not rebuild into the same .partial"
    assert outcomes["first"].built and not outcomes["second"].built
    assert (first.bin_dir(RECIPE) / "demo").read_text() == "binary"
    assert not first.bin_dir(RECIPE).with_name(first.bin_dir(RECIPE).name + ".partial").exists()
    assert not first.lock_path(RECIPE).with_suffix(".owner").exists()


HOLDER = """
import sys, time
from pathlib import Path
from restoredrill.toolchain.gobuild import GoToolchain
from restoredrill.toolchain.recipes import GoBuild
recipe = GoBuild(name="demo", version="v1.2.3", module="example.com/demo", binaries={"demo": "x"})
toolchain = GoToolchain(cache=Path(sys.argv[1]), recipes={"demo": recipe}, out=lambda line: None)
with toolchain.build_lock(recipe):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_build_waits_for_another_process_and_names_its_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lines: list[str] = []
        toolchain = SlowToolchain(tmp_path, lines)
        toolchain.release.set()
        started = time.monotonic()
        outcome = toolchain.build(RECIPE, go_version="go1.24")
        assert time.monotonic() - started >= 1.0, "it built while the other process held the lock"
    finally:
        holder.wait(timeout=30)
    assert f"waiting for another build of demo (pid {holder.pid})" in lines
    assert outcome.built and toolchain.builds == 1
