#!/usr/bin/env python3
"""Figures for the snapshot check: `kopia snapshot verify` throughput against `sha256sum` over the
same bytes, and the whole check (verify, restore into scratch, two inventories, compare) for a
volume of many small files.

Runs the kopia CLI Velero v1.16.2 links (`restoredrill toolchain --no-apt --only kopia`) on a local
filesystem repository in a temporary folder; no cluster. Prints, never asserts (the issue's aims:
verify at least 0.5 of sha256sum's throughput; the comparison of 10,000 small files under 30 s).
Both readers see the same bytes from a warm page cache, so the ratio is kopia's decrypt, hash
and decompress work against sha256sum's hashing, not the disk. Run as root (the restore keeps
owners, as Velero's node-agent does).
Usage: .venv/bin/python bench/kopia_verify.py [--mb 256] [--files 10000] [--parallel 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSYBOX = Path("/bin/busybox")
PASSWORD = "static-passw0rd"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="bytes to verify, in MiB (files of 8 MiB)")
    parser.add_argument("--files", type=int, default=10_000, help="small files in the comparison volume")
    parser.add_argument("--parallel", type=int, default=4, help="kopia's --parallel and --file-parallelism")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from restoredrill.drill.snapshot import VolumeSnapshot, verify_snapshots
    from restoredrill.platform.kopia import KopiaCommands, filesystem_repository
    from restoredrill.toolchain.gobuild import GoToolchain

    kopia = GoToolchain().binary("kopia")
    with tempfile.TemporaryDirectory(prefix="kopia-bench-") as scratch:
        root = Path(scratch)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "KOPIA_PASSWORD": PASSWORD,
               "KOPIA_CHECK_FOR_UPDATES": "false"}

        def run(argv: Sequence[str], *, config: str = "writer") -> tuple[float, subprocess.CompletedProcess[str]]:
            command = list(argv)
            if command[0] == str(kopia) and not any(a.startswith("--config-file=") for a in command):
                command += [f"--config-file={root}/{config}.config", f"--log-dir={root}/logs"]
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command[:4])} exited {done.returncode}: {done.stdout}{done.stderr}")
            return time.perf_counter() - started, done

        repository = root / "repository"
        run([str(kopia), "repository", "create", "filesystem", f"--path={repository}",
             f"--cache-directory={root}/writer-cache"])

        def snapshot(source: Path) -> str:
            run([str(kopia), "snapshot", "create", str(source)])
            _, listed = run([str(kopia), "snapshot", "list", str(source), "--json"])
            return str(json.loads(listed.stdout)[0]["id"])

        # ---- throughput: verify against sha256sum over the same bytes ----------------------------
        big = root / "big"
        big.mkdir()
        chunk = 8 * 1024 * 1024
        for i in range(max(1, args.mb * 1024 * 1024 // chunk)):
            (big / f"part-{i:04d}.bin").write_bytes(os.urandom(chunk))
        total = sum(p.stat().st_size for p in big.iterdir())
        big_id = snapshot(big)
        # A reader with an empty cache, connected read-only as the drill connects.
        commands = KopiaCommands(repository=filesystem_repository(str(repository)), home=str(root / "reader"),
                                 kopia=str(kopia), parallel=args.parallel)
        run(commands.connect())
        sha_s, _ = run([str(BUSYBOX), "sh", "-c", 'cd "$0" && exec "$1" sha256sum *', str(big), str(BUSYBOX)])
        verify_s, _ = run(commands.verify(big_id))
        mib = total / 1024 / 1024
        print(f"bytes: {mib:.0f} MiB in {len(list(big.iterdir()))} files (kopia --parallel {args.parallel}, "
              f"{os.cpu_count()} CPUs)")
        print(f"busybox sha256sum:    {sha_s:6.2f} s  {mib / sha_s:7.1f} MiB/s")
        print(f"kopia snapshot verify:{verify_s:6.2f} s  {mib / verify_s:7.1f} MiB/s  "
              f"(ratio to sha256sum {sha_s / verify_s:.2f}; aim >= 0.5)")
        shutil.rmtree(big)

        # ---- the whole check for a volume of many small files -------------------------------------
        source = root / "volumes" / "small"
        for i in range(args.files):
            folder = source / f"d{i // 500:03d}"
            if i % 500 == 0:
                folder.mkdir(parents=True)
            (folder / f"f{i:05d}.txt").write_bytes(os.urandom(64 + i % 512))
        small_id = snapshot(source)
        restore_uid = "bench-restore"
        (source / ".velero").mkdir()
        (source / ".velero" / restore_uid).write_bytes(b"")

        def in_pod(argv: Sequence[str], seconds: float) -> tuple[int | None, str]:
            command = [str(BUSYBOX), *argv] if argv[0] == "sh" else list(argv)
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds, check=False)
            return done.returncode, done.stdout + done.stderr

        started = time.perf_counter()
        result = verify_snapshots(
            in_pod, commands=commands,
            snapshots=[VolumeSnapshot(claim="small", snapshot_id=small_id, pod_volume_backup="bench",
                                      volume_namespace="bench")],
            restore_uid=restore_uid, restore_started=None, timeout=3600, volumes_root=str(root / "volumes"),
            scratch_root=str(root / "scratch"))
        whole_s = time.perf_counter() - started
        (volume,) = result.volumes
        print(f"snapshot check of {args.files} small files ({volume.entries} entries): {whole_s:.1f} s "
              f"(verify {volume.verify_s or 0:.1f} s, restore {volume.restore_s or 0:.1f} s, inventories and "
              f"compare {volume.compare_s or 0:.1f} s; aim < 30 s); problems: {len(result.problems)}")
        for problem in result.problems[:5]:
            print(f"  {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
