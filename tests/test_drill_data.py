"""The drill's seed data and its shell scripts, run here with the shell the pods use (busybox)."""

import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from restoredrill.drill.data import (
    BLOCK_SIZE,
    INSPECTOR_LABEL,
    INVENTORY_SCRIPT,
    LARGE_CHUNKS,
    SEED_DIR,
    SEED_SCRIPT,
    TABLE,
    TableCheck,
    block,
    compare_table,
    inspector_pod,
    mysql_command,
    seed_archive,
)
from restoredrill.verify import Entry, compare_volume, kopia_folder_mtimes, parse_inventory

BUSYBOX = Path("/bin/busybox")
MD5 = "0123456789abcdef0123456789abcdef"


def shell() -> list[str]:
    """The pods' shell when this machine has it (busybox prefers its own applets), else the host's sh."""
    if BUSYBOX.is_file():
        return [str(BUSYBOX), "sh"]
    found = shutil.which("sh")
    if found is None:
        pytest.skip("no sh on this machine")
    return [found]


# ---- the block and the archive ------------------------------------------------------------------
def test_block_is_deterministic_sized_and_seeded() -> None:
    first = block("pelican/pelican-data")
    assert len(first) == BLOCK_SIZE
    assert block("pelican/pelican-data") == first
    assert block("pelican/pelican-logs") != first
    assert len(block("x", size=100)) == 100
    assert block("x", size=100) == block("x")[:100]


def test_seed_archive_holds_the_block_and_the_script() -> None:
    with tarfile.open(fileobj=io.BytesIO(seed_archive(app="pelican", claim="pelican-data"))) as tar:
        assert sorted(tar.getnames()) == ["block", "seed.sh"]
        block_file, script = tar.extractfile("block"), tar.extractfile("seed.sh")
        assert block_file is not None and script is not None
        data = block_file.read()
        assert len(data) == 1024 * 1024
        assert data == block("pelican/pelican-data")
        assert script.read().decode() == SEED_SCRIPT
    assert seed_archive(app="pelican", claim="pelican-data") == seed_archive(app="pelican", claim="pelican-data")


# ---- the scripts, run for real ------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A volume seeded by SEED_SCRIPT, with its block read from a temporary folder instead of /tmp/rd."""
    scratch = tmp_path_factory.mktemp("seed")
    rd, volume = scratch / "rd", scratch / "volume"
    rd.mkdir()
    volume.mkdir()
    data = block("pelican/pelican-data")
    (rd / "block").write_bytes(data)
    assert "/tmp/rd/block" in SEED_SCRIPT
    (rd / "seed.sh").write_text(SEED_SCRIPT.replace("/tmp/rd", str(rd)))
    # As the drill runs it: sh /tmp/rd/seed.sh /volumes/<claim> <app>/<claim>
    subprocess.run([*shell(), str(rd / "seed.sh"), str(volume), "pelican/pelican-data"], check=True, timeout=120,
                   capture_output=True)
    return volume, data


def test_the_seed_script_writes_every_shape(seeded: tuple[Path, bytes]) -> None:
    volume, data = seeded
    seed = volume / SEED_DIR
    assert (seed / "empty.txt").stat().st_size == 0
    assert (seed / "small.txt").read_text() == "restoredrill seed for pelican/pelican-data\n"
    assert (seed / "with space.txt").read_bytes() == b"x"
    assert (seed / "empty-dir").is_dir() and not any((seed / "empty-dir").iterdir())
    assert (seed / "nested/a/b/c/deep.bin").read_bytes() == data[:4096]
    assert (seed / "medium.bin").read_bytes() == data[:1048573]
    large = seed / "large.bin"
    assert large.stat().st_size == LARGE_CHUNKS * (BLOCK_SIZE + len("chunk 00000000\n"))
    assert large.stat().st_size > 50 * 1024 * 1024
    with large.open("rb") as stream:
        assert stream.read(15) == b"chunk 00000000\n"
        assert stream.read(BLOCK_SIZE) == data
        assert stream.read(15) == b"chunk 00000001\n"
    assert (seed / "link-to-small").is_symlink()
    assert os.readlink(seed / "link-to-small") == "small.txt"
    assert (seed / "link-to-small").read_text() == (seed / "small.txt").read_text()
    assert (seed / "dangling-link").is_symlink() and not (seed / "dangling-link").exists()
    assert os.readlink(seed / "dangling-link") == "/nonexistent/target"


def test_seeding_starts_from_an_empty_seed_folder(tmp_path: Path) -> None:
    """A stray file from an earlier run is gone; what is beside the seed folder is kept."""
    rd, volume = tmp_path / "rd", tmp_path / "volume"
    (volume / SEED_DIR).mkdir(parents=True)
    (volume / SEED_DIR / "stray").write_text("left over")
    (volume / "app.db").write_text("the app's own")
    rd.mkdir()
    (rd / "block").write_bytes(block("n8n/n8n-data"))
    script = SEED_SCRIPT.replace("/tmp/rd", str(rd))
    subprocess.run([*shell(), "-c", script, "seed", str(volume), "n8n/n8n-data"], check=True, timeout=120,
                   capture_output=True)
    assert not (volume / SEED_DIR / "stray").exists()
    assert (volume / "app.db").read_text() == "the app's own"
    assert (volume / SEED_DIR / "small.txt").read_text() == "restoredrill seed for n8n/n8n-data\n"


def inventory_of(volume: Path) -> dict[str, Entry]:
    # As the drill runs it: sh -c INVENTORY_SCRIPT inventory /volumes/<claim>
    result = subprocess.run([*shell(), "-c", INVENTORY_SCRIPT, "inventory", str(volume)], check=True, timeout=120,
                            capture_output=True, text=True)
    return parse_inventory(result.stdout)


def test_the_inventory_script_matches_the_host(seeded: tuple[Path, bytes]) -> None:
    volume, _ = seeded
    (volume / "app file.db").write_bytes(b"the app's own data\n")  # the whole volume, not only the seed
    try:
        check_inventory(volume)
    finally:
        (volume / "app file.db").unlink()


def host_entry(volume: Path, path: Path) -> Entry:
    """What the inventory must say of `path`, read with Python's lstat."""
    st = path.lstat()
    relative = "." if path == volume else str(path.relative_to(volume))
    entry = Entry(path=relative, kind="dir", mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                  mtime=int(st.st_mtime))
    if path.is_symlink():
        return replace(entry, kind="symlink", target=os.readlink(path))
    if path.is_dir():
        return entry
    content = path.read_bytes()
    return replace(entry, kind="file", size=len(content), sha256=hashlib.sha256(content).hexdigest())


def check_inventory(volume: Path) -> None:
    inventory = inventory_of(volume)
    expected_paths = {"."}
    assert inventory["."] == host_entry(volume, volume)
    for path in volume.rglob("*"):
        relative = str(path.relative_to(volume))
        expected_paths.add(relative)
        assert inventory[relative] == host_entry(volume, path), relative
    assert set(inventory) == expected_paths
    assert inventory[SEED_DIR].kind == "dir"
    assert inventory[f"{SEED_DIR}/empty-dir"].kind == "dir"
    assert inventory[f"{SEED_DIR}/nested/a/b"].kind == "dir"
    assert inventory[f"{SEED_DIR}/link-to-small"].target == "small.txt"
    assert inventory[f"{SEED_DIR}/dangling-link"].target == "/nonexistent/target"
    assert inventory[f"{SEED_DIR}/with space.txt"].size == 1
    assert inventory[f"{SEED_DIR}/empty.txt"].sha256 == hashlib.sha256(b"").hexdigest()
    assert inventory["app file.db"].size == len(b"the app's own data\n")


def test_the_inventory_of_an_empty_volume_is_its_root(tmp_path: Path) -> None:
    assert inventory_of(tmp_path) == {".": host_entry(tmp_path, tmp_path)}


# ---- table checks -------------------------------------------------------------------------------
def test_table_check_parses_mariadb_batch_output() -> None:
    assert TableCheck.parse(f"1000\t{MD5}\n") == TableCheck(rows=1000, digest=MD5)


def test_table_check_parses_psql_unaligned_output() -> None:
    assert TableCheck.parse(f"1000|{MD5}\n") == TableCheck(rows=1000, digest=MD5)
    assert TableCheck.parse(f"0|{MD5}") == TableCheck(rows=0, digest=MD5)


def test_table_check_takes_the_last_line() -> None:
    assert TableCheck.parse(f"SET\n1000\t{MD5}\n") == TableCheck(rows=1000, digest=MD5)


@pytest.mark.parametrize("junk", ["", "\n", "ERROR 1146 (42S02): Table 'restoredrill_prices' doesn't exist",
                                  f"many\t{MD5}", f"1000\t{MD5}\textra", "1000"])
def test_table_check_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError, match="count<TAB>md5"):
        TableCheck.parse(junk)


def test_compare_table() -> None:
    before = TableCheck(rows=1000, digest=MD5)
    assert compare_table(where="mysql:pricebuddy-database", before=before, after=TableCheck(1000, MD5)) == []
    (problem,) = compare_table(where="mysql:pricebuddy-database", before=before, after=TableCheck(1001, "f" * 32))
    assert problem.startswith(f"mysql:pricebuddy-database: table {TABLE} has 1001 rows")
    assert "1000 rows" in problem and MD5 in problem and "f" * 32 in problem
    (changed,) = compare_table(where="cnpg:immich-postgres", before=before, after=TableCheck(1000, "e" * 32))
    assert "cnpg:immich-postgres" in changed and "e" * 32 in changed


# ---- pods and commands --------------------------------------------------------------------------
def test_inspector_pod_mounts_each_claim_under_volumes() -> None:
    pod = inspector_pod(name="restoredrill-inspector", namespace="pelican", image="docker.io/library/busybox:1.35",
                        claims=["pelican-data", "pelican-logs"], labels={"extra": "yes"})
    assert pod["metadata"]["name"] == "restoredrill-inspector"
    assert pod["metadata"]["namespace"] == "pelican"
    assert pod["metadata"]["labels"] == {INSPECTOR_LABEL: "inspector", "extra": "yes"}
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "docker.io/library/busybox:1.35"
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
    mounts = {volumes[m["name"]]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"pelican-data": "/volumes/pelican-data", "pelican-logs": "/volumes/pelican-logs"}
    assert pod["spec"]["restartPolicy"] == "Never"


def test_inspector_pod_without_extra_labels() -> None:
    pod = inspector_pod(name="i", namespace="n", image="busybox", claims=[])
    assert pod["metadata"]["labels"] == {INSPECTOR_LABEL: "inspector"}
    assert pod["spec"]["volumes"] == [] and pod["spec"]["containers"][0]["volumeMounts"] == []


@pytest.fixture
def fake_mariadb(tmp_path: Path) -> Path:
    """A `mariadb` that prints the password it got (MYSQL_PWD) and its arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mariadb"
    fake.write_text("#!/bin/sh\nprintf 'pw=%s\\n' \"${MYSQL_PWD:-}\"\nprintf '%s\\n' \"$@\"\n")
    fake.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("password_variable", ["MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"])
def test_mysql_command_passes_the_sql_untouched(tmp_path: Path, fake_mariadb: Path, password_variable: str) -> None:
    pwned = tmp_path / "pwned"
    sql = f"SELECT '$(touch {pwned})', \"`touch {pwned}`\", '$HOME' \\; -- it's fine"
    command = mysql_command(sql, database="pricebuddy")
    assert command[:2] == ["sh", "-c"] and command[-1] == sql  # the SQL is $0, not part of the script
    assert sql not in command[2]
    env = {"PATH": f"{fake_mariadb}:{os.environ.get('PATH', '/usr/bin:/bin')}", password_variable: "s3cret pw"}
    result = subprocess.run([shutil.which("sh") or "/bin/sh", *command[1:]], env=env, check=True, timeout=30,
                            capture_output=True, text=True)
    # The password travels in MYSQL_PWD, never on the command line.
    assert result.stdout.splitlines() == ["pw=s3cret pw", "-uroot", "-N", "-B", "pricebuddy", "-e", sql]
    assert not pwned.exists()


def test_the_inventory_keeps_names_with_tabs_newlines_and_backslashes(tmp_path: Path) -> None:
    """Such names are escaped by the script and restored by parse_inventory, never split or dropped."""
    names = ["tab\there", "new\nline", "back\\slash", "plain"]
    for name in names:
        (tmp_path / name).write_text(name)
    (tmp_path / "link").symlink_to("new\nline")
    shell = "/bin/busybox" if Path("/bin/busybox").exists() else "sh"
    args = [shell, "sh", "-c"] if shell == "/bin/busybox" else [shell, "-c"]
    out = subprocess.run([*args, INVENTORY_SCRIPT, "inventory", str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    inventory = parse_inventory(out)
    assert sorted(inventory) == sorted([".", *names, "link"])
    assert inventory["link"].target == "new\nline"
    assert inventory["back\\slash"].sha256 == hashlib.sha256(b"back\\slash").hexdigest()


# ---- metadata, recorded for real and compared -----------------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown and mknod need root")


@pytest.fixture
def shaped(tmp_path: Path) -> Path:
    """A volume of every kind and mode the inventory records: owners, setuid/setgid/sticky, old
    mtimes, a hard link pair, a fifo, a socket and (as root) a character device."""
    volume = tmp_path / "volume"
    (volume / "sticky").mkdir(parents=True)
    (volume / "app.db").write_bytes(b"rows\n")
    (volume / "settings").write_bytes(b"key: value\n")
    (volume / "setuid").write_bytes(b"#!/bin/sh\n")
    os.link(volume / "app.db", volume / "sticky" / "app.db.link")
    os.symlink("app.db", volume / "current")
    os.mkfifo(volume / "pipe")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(volume / "app.sock"))
    os.chmod(volume / "sticky", 0o1777)
    os.chmod(volume / "setuid", 0o4755)
    os.chmod(volume / "settings", 0o640)
    if os.geteuid() == 0:
        os.mknod(volume / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.chown(volume / "settings", 1000, 2000)
        os.lchown(volume / "current", 1000, 2000)
    for path in ("settings", "setuid", "sticky"):
        os.utime(volume / path, (1_600_000_000, 1_600_000_000))
    return volume


def test_the_inventory_records_kind_mode_owner_mtime_and_hard_links(shaped: Path) -> None:
    inventory = inventory_of(shaped)
    for path in [shaped, *shaped.rglob("*")]:
        relative = "." if path == shaped else str(path.relative_to(shaped))
        entry = inventory[relative]
        st = path.lstat()
        assert (entry.mode, entry.uid, entry.gid, entry.mtime) == (
            stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)), relative
    assert inventory["sticky"].mode == 0o1777 and inventory["setuid"].mode == 0o4755
    assert inventory["settings"].mtime == 1_600_000_000 and inventory["settings"].mode == 0o640
    assert inventory["app.db"].hard_links == ("sticky/app.db.link",)
    assert inventory["sticky/app.db.link"].hard_links == ("app.db",)
    assert inventory["setuid"].hard_links == ()
    assert inventory["pipe"].kind == "fifo" and inventory["app.sock"].kind == "socket"
    assert inventory["current"].kind == "symlink" and inventory["current"].target == "app.db"
    if os.geteuid() == 0:
        assert inventory["null"] == Entry(path="null", kind="char-device", mode=0o600, uid=0, gid=0,
                                          mtime=inventory["null"].mtime, device="1:3")
        assert (inventory["settings"].uid, inventory["settings"].gid) == (1000, 2000)
        assert (inventory["current"].uid, inventory["current"].gid) == (1000, 2000)


def restored_copy(volume: Path, into: Path) -> Path:
    """A faithful "restore": cp -a keeps modes, owners, times and hard links."""
    subprocess.run(["cp", "-a", str(volume), str(into)], check=True, timeout=60)
    return into


def as_kopia_restores_folders(restored: Path, before: dict[str, Entry]) -> None:
    """Give each folder the mtime a Kopia restore gives it: the newest inside it at backup."""
    for path, mtime in kopia_folder_mtimes(before).items():
        os.utime(restored / path, (mtime, mtime), follow_symlinks=False)


@pytest.mark.parametrize("fault, field", [
    (lambda v: os.chmod(v / "settings", 0o644), "mode 0640 at backup, 0644 restored"),
    (lambda v: os.chmod(v / "setuid", 0o755), "mode 4755 at backup, 0755 restored"),
    (lambda v: os.chmod(v / "sticky", 0o777), "mode 1777 at backup, 0777 restored"),
    (lambda v: os.utime(v / "settings", (1_600_000_000, 1_600_000_001)),
     "mtime 2020-09-13T12:26:40Z at backup, 2020-09-13T12:26:41Z restored"),
    (lambda v: os.utime(v / "sticky", (1_700_000_000, 1_700_000_000)), "mtime 2020-09-13T12:26:40Z at backup"),
])
def test_a_changed_mode_or_mtime_fails_naming_path_and_field(
        shaped: Path, tmp_path: Path, fault: Callable[[Path], None], field: str) -> None:
    before = inventory_of(shaped)
    restored = restored_copy(shaped, tmp_path / "restored")
    assert compare_volume(volume="v", expected=before, actual=inventory_of(restored)) == []
    fault(restored)
    (problem,) = compare_volume(volume="v", expected=before, actual=inventory_of(restored))
    assert problem.startswith("v: ") and field in problem


@needs_root
def test_a_changed_owner_fails(shaped: Path, tmp_path: Path) -> None:
    before = inventory_of(shaped)
    restored = restored_copy(shaped, tmp_path / "restored")
    os.chown(restored / "settings", 1001, 2000)
    os.lchown(restored / "current", 1000, 0)
    assert compare_volume(volume="v", expected=before, actual=inventory_of(restored)) == [
        "v: symlink 'current' differs: gid 2000 at backup, 0 restored",
        "v: file 'settings' differs: uid 1000 at backup, 1001 restored",
    ]


@needs_root
def test_files_left_root_owned_with_mode_0000_fail(shaped: Path, tmp_path: Path) -> None:
    """What a restore whose chown/chmod were refused (kopia ignores permission errors) leaves."""
    before = inventory_of(shaped)
    restored = restored_copy(shaped, tmp_path / "restored")
    for path in (restored / "settings", restored / "setuid"):
        os.chown(path, 0, 0)
        os.chmod(path, 0)
    problems = compare_volume(volume="v", expected=before, actual=inventory_of(restored))
    assert problems == [
        "v: file 'settings' differs: mode 0640 at backup, 0000 restored; uid 1000 at backup, 0 restored; "
        "gid 2000 at backup, 0 restored",
        "v: file 'setuid' differs: mode 4755 at backup, 0000 restored",
    ]


def test_a_broken_hard_link_fails_on_both_names(shaped: Path, tmp_path: Path) -> None:
    before = inventory_of(shaped)
    restored = restored_copy(shaped, tmp_path / "restored")
    link = restored / "sticky" / "app.db.link"
    stamp = link.stat()
    link.unlink()
    shutil.copy2(restored / "app.db", link)  # same bytes and times, its own inode: what kopia restores
    os.utime(restored / "sticky", ns=(stamp.st_atime_ns, 1_600_000_000 * 10**9))
    problems = compare_volume(volume="v", expected=before, actual=inventory_of(restored))
    assert problems == [
        "v: file 'app.db' differs: hard_links ['sticky/app.db.link'] at backup, none restored "
        "(Kopia keeps no hard links: each name is restored as a file of its own)",
        "v: file 'sticky/app.db.link' differs: hard_links ['app.db'] at backup, none restored "
        "(Kopia keeps no hard links: each name is restored as a file of its own)",
    ]


def test_special_files_velero_does_not_back_up(shaped: Path, tmp_path: Path) -> None:
    """A fifo or device missing after the restore fails with the reason; a socket is a note."""
    from restoredrill.verify import diff_volume

    before = inventory_of(shaped)
    restored = restored_copy(shaped, tmp_path / "restored")
    for name in ("pipe", "app.sock", "null"):
        (restored / name).unlink(missing_ok=True)
    as_kopia_restores_folders(restored, before)
    os.utime(restored, (1, 1))  # the root's mtime is Velero's (done-file), tolerated with restore_uid
    diff = diff_volume(volume="v", expected=before, actual=inventory_of(restored), restore_uid="u-1")
    reason = "Velero's fs-backup (Kopia) does not back up fifos, sockets or device files"
    expected = [f"v: fifo 'pipe' is missing after the restore ({reason})"]
    if os.geteuid() == 0:
        expected.insert(0, f"v: char-device 'null' is missing after the restore ({reason})")
    assert diff.problems == expected
    assert diff.notes == [f"v: socket 'app.sock' is not restored ({reason}; the app makes a new one)"]


def test_velero_bookkeeping_is_allowed_by_exact_path_only(shaped: Path, tmp_path: Path) -> None:
    """`.velero/<restore UID>` and the root's mtime are Velero's; any other `.velero/` entry is not."""
    (shaped / ".velero").mkdir()
    (shaped / ".velero" / "uid-of-an-older-restore").write_bytes(b"")
    before = inventory_of(shaped)
    restored = restored_copy(shaped, tmp_path / "restored")
    shutil.rmtree(restored / ".velero")  # as the node-agent does (OnDataPathCompleted)
    (restored / ".velero").mkdir(mode=0o755)
    (restored / ".velero" / "uid-1").write_bytes(b"")
    as_kopia_restores_folders(restored, before)
    os.utime(restored, (1, 1))
    assert compare_volume(volume="v", expected=before, actual=inventory_of(restored), restore_uid="uid-1") == []
    # Not restored by Velero: the same differences all fail.
    assert compare_volume(volume="v", expected=before, actual=inventory_of(restored))
    (restored / ".velero" / "uid-2").write_bytes(b"")
    assert compare_volume(volume="v", expected=before, actual=inventory_of(restored), restore_uid="uid-1") == [
        "v: file '.velero/uid-2' was not there at backup time"]
