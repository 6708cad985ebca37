"""The data a drill writes before the backup and reads back after the restore.

Files: every file volume gets a `restoredrill-seed/` tree of varied shapes (an empty file, an empty
folder, nested folders, a symlink and a dangling one, a name with a space, a 1 MiB file of odd
size and one over 50 MB), deterministic per app and claim. Its bytes come from one 1 MiB block
made here from a hash chain and streamed into the pod; the large file is that block repeated with
a numbered header per chunk, so no two chunks are equal. Inventories are taken inside the pod
(busybox `find`, `stat`, `sha256sum`) of the *whole* volume, seed and app files alike, with the
metadata a restore must keep (kind, mode, owner, group, mtime, hard links; see verify.py).

Rows: MySQL/MariaDB and PostgreSQL get a `restoredrill_prices` table of 1000 deterministic rows;
the check is the row count and an MD5 of the ordered contents, computed by the database.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BLOCK_SIZE = 1024 * 1024
LARGE_CHUNKS = 52  # 52 chunks of 1 MiB + headers: just over 50 MiB (54.5 MB)
SEED_DIR = "restoredrill-seed"
SENTINEL = ".restoredrill-sentinel"
MOUNT_ROOT = "/volumes"
TABLE = "restoredrill_prices"
ROWS = 1000
SENTINEL_ROW_ID = 1_000_001
INSPECTOR_LABEL = "restoredrill.io/role"


def block(seed: str, size: int = BLOCK_SIZE) -> bytes:
    """`size` deterministic pseudo-random bytes: a SHA-256 chain over `seed`."""
    out = bytearray()
    digest = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        digest = hashlib.sha256(digest).digest()
        out += digest
    return bytes(out[:size])


SEED_SCRIPT = r"""set -eu
root="$1"; label="$2"; d="$root/""" + SEED_DIR + r""""
rm -rf "$d"; mkdir -p "$d/nested/a/b/c" "$d/empty-dir"
: > "$d/empty.txt"
printf 'restoredrill seed for %s\n' "$label" > "$d/small.txt"
printf 'x' > "$d/with space.txt"
head -c 4096 /tmp/rd/block > "$d/nested/a/b/c/deep.bin"
head -c 1048573 /tmp/rd/block > "$d/medium.bin"
i=0
while [ "$i" -lt """ + str(LARGE_CHUNKS) + r""" ]; do printf 'chunk %08d\n' "$i"; cat /tmp/rd/block; i=$((i+1)); done \
    > "$d/large.bin"
ln -s small.txt "$d/link-to-small"
ln -s /nonexistent/target "$d/dangling-link"
sync
"""

# One line per entry, the volume root (".") included, in verify.INVENTORY_FIELDS order: raw st_mode
# in hex (kind and permission bits, setuid/setgid/sticky included), size, uid, gid, mtime, dev:inode
# and link count (hard links), device numbers, then the file's SHA-256, the symlink's target or "-",
# then the path. One `stat` per entry reads every number at once. Names reach the loop intact
# (find -exec, no `read`); backslash, tab and newline are escaped as \\, \t, \n. An unreadable file
# prints "unreadable" instead of a digest, which parse_inventory refuses, naming the file.
INVENTORY_SCRIPT = r"""set -eu
cd "$1"
find . -exec sh -c '
set -eu
tab=$(printf "\t"); nl=$(printf "\nx"); nl=${nl%x}
esc() {
    case "$1" in
        *"$tab"*|*"$nl"*|*\\*) printf "%s" "$1" | awk -v ORS= "{ gsub(/\\\\/, \"\\\\\\\\\");
            gsub(/\t/, \"\\\\t\"); if (NR > 1) printf \"\\\\n\"; print }" ;;
        *) printf "%s" "$1" ;;
    esac
}
for p do
    meta=$(stat -c "%f$tab%s$tab%u$tab%g$tab%Y$tab%d:%i$tab%h$tab%t:%T" "$p")
    if [ "$p" = . ]; then rel=.; else rel=$(esc "${p#./}"); fi
    if [ -L "$p" ]; then extra=$(esc "$(readlink "$p")")
    elif [ -f "$p" ]; then extra=$(sha256sum < "$p" 2>/dev/null) || extra=unreadable; extra=${extra%% *}
    else extra=-
    fi
    printf "%s\t%s\t%s\n" "$meta" "$extra" "$rel"
done' sh {} +
"""


def seed_archive(*, app: str, claim: str) -> bytes:
    """The tar streamed into the inspector pod for seeding one claim: the block and the script."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("block", block(f"{app}/{claim}")), ("seed.sh", SEED_SCRIPT.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def mount_path(claim: str) -> str:
    return f"{MOUNT_ROOT}/{claim}"


def inspector_pod(*, name: str, namespace: str, image: str, claims: Sequence[str],
                  labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A busybox pod mounting `claims` at /volumes/<claim>: seeds and inventories them.

    It exists only while the drill reads or writes: it is deleted before the backup (so Velero
    copies each volume once, from the app's own pod) and created again after the restore.
    """
    volumes = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": claim}} for i, claim in enumerate(claims)]
    mounts = [{"name": f"v{i}", "mountPath": mount_path(claim)} for i, claim in enumerate(claims)]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {INSPECTOR_LABEL: "inspector", **(labels or {})}},
        "spec": {
            "containers": [{"name": "inspector", "image": image, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "exec sleep 86400"], "volumeMounts": mounts}],
            "volumes": volumes, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
        },
    }


# ---- databases ---------------------------------------------------------------------------------
MYSQL_SEED = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
  id INT PRIMARY KEY, product VARCHAR(64) NOT NULL, price DECIMAL(10,2) NOT NULL, seen DATE NOT NULL
) ENGINE=InnoDB;
DELETE FROM {TABLE};
INSERT INTO {TABLE}
  WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {ROWS})
  SELECT n, CONCAT('product-', n), ROUND(n * 1.37, 2), DATE_ADD('2026-01-01', INTERVAL n % 365 DAY) FROM s;
"""
MYSQL_CHECK = (f"SET SESSION group_concat_max_len = 16777216; SELECT COUNT(*), "
               f"MD5(GROUP_CONCAT(CONCAT_WS('|', id, product, price, seen) ORDER BY id SEPARATOR ',')) FROM {TABLE};")
MYSQL_SENTINEL = (f"INSERT INTO {TABLE} VALUES ({SENTINEL_ROW_ID}, 'sentinel-after-backup', 0, '2026-01-01');")

POSTGRES_SEED = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
  id INT PRIMARY KEY, product TEXT NOT NULL, price NUMERIC(10,2) NOT NULL, seen DATE NOT NULL);
DELETE FROM {TABLE};
INSERT INTO {TABLE} SELECT n, 'product-' || n, round(n * 1.37, 2), DATE '2026-01-01' + (n % 365)
  FROM generate_series(1, {ROWS}) AS n;
"""
POSTGRES_CHECK = (f"SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, product, price, seen), ',' "
                  f"ORDER BY id), '')) FROM {TABLE};")
POSTGRES_SENTINEL = f"INSERT INTO {TABLE} VALUES ({SENTINEL_ROW_ID}, 'sentinel-after-backup', 0, '2026-01-01');"


def mysql_command(sql: str, *, database: str) -> list[str]:
    """Run `sql` as root with the password from the container's own environment (MariaDB or MySQL
    image, whichever client it has; no `-p` when no password is set, which would prompt)."""
    script = ('client=$(command -v mariadb || command -v mysql); '
              'pw="${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}"; '
              f'if [ -n "$pw" ]; then export MYSQL_PWD="$pw"; fi; exec "$client" -uroot -N -B {database} -e "$0"')
    return ["sh", "-c", script, sql]


@dataclass(frozen=True)
class TableCheck:
    """Row count and content digest of the drill's table, as the database computed them."""

    rows: int
    digest: str

    @classmethod
    def parse(cls, text: str) -> TableCheck:
        fields = text.strip().splitlines()[-1].replace("|", "\t").split("\t") if text.strip() else []
        if len(fields) != 2 or not fields[0].strip().isdigit():
            raise ValueError(f"expected `count<TAB>md5`, got {text.strip()[-200:]!r}")
        return cls(rows=int(fields[0]), digest=fields[1].strip())


def compare_table(*, where: str, before: TableCheck, after: TableCheck) -> list[str]:
    if before == after:
        return []
    return [f"{where}: table {TABLE} has {after.rows} rows (md5 {after.digest}) after the restore, "
            f"{before.rows} rows (md5 {before.digest}) at backup time"]
