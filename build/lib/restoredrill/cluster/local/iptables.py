"""Reading `iptables-save` output and planning the removal of our chains (pure: unit-tested).

A chain is named `FAMILY/TABLE/CHAIN` (`iptables/nat/KUBE-SERVICES`). Which chains are ours is
decided by the ledger, never by a name: a `KUBE-*` chain that was there before `up` belongs to
someone else (another kube-proxy, a hand-made rule) and is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable

FAMILIES = ("iptables", "ip6tables")
# Chains our kube-proxy (iptables mode) and kubelet make, by fixed name or by prefix. One of these
# already on the host means another kube-proxy or kubelet: ours would share and rewrite it.
KUBE_FIXED_CHAINS = frozenset({
    "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-MARK-DROP",
    "KUBE-FORWARD", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL", "KUBE-PROXY-CANARY",
    "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT", "KUBE-LOAD-BALANCER",
})
KUBE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-")
# Prefixes of chains our components make at all (kube-proxy, kubelet, the CNI plugins).
OUR_COMPONENT_PREFIXES = ("KUBE-", "CNI-")


def chain_id(family: str, table: str, chain: str) -> str:
    return f"{family}/{table}/{chain}"


def split_chain_id(identifier: str) -> tuple[str, str, str]:
    family, table, chain = identifier.split("/", 2)
    return family, table, chain


def parse_save(text: str) -> dict[str, list[str]]:
    """`iptables-save` output as {table: its lines between `*table` and COMMIT}."""
    tables: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("*"):
            current = line[1:].strip()
            tables[current] = []
        elif current and line != "COMMIT":
            tables[current].append(line)
    return tables


def chains(family: str, tables: dict[str, list[str]]) -> set[str]:
    """Every chain of the saved tables, as chain ids."""
    return {chain_id(family, table, line[1:].split()[0])
            for table, lines in tables.items() for line in lines if line.startswith(":")}


def is_kube_component_chain(chain: str) -> bool:
    """A chain name kube-proxy or kubelet would make (and so share with another kube-proxy)."""
    return chain in KUBE_FIXED_CHAINS or chain.startswith(KUBE_CHAIN_PREFIXES)


def _target(rule: list[str]) -> str:
    for flag in ("-j", "-g"):
        if flag in rule and rule.index(flag) + 1 < len(rule):
            return rule[rule.index(flag) + 1]
    return ""


def mentions_network(tables: dict[str, list[str]], table: str, chain: str, network: str) -> bool:
    """Whether a CNI plugin's chain is of `network`: its rules carry `name: "NETWORK"` in a comment."""
    needle = f'name: \\"{network}\\"'
    return any(line.startswith(f"-A {chain} ") and (needle in line or f'name: "{network}"' in line)
               for line in tables.get(table, []))


def removal_script(table: str, lines: list[str], remove: Iterable[str]) -> str | None:
    """An `iptables-restore --noflush` script deleting the chains `remove` of `table` (chain names)
    and every rule elsewhere that jumps to them; None when none of them is in the table."""
    present = {line[1:].split()[0] for line in lines if line.startswith(":")}
    doomed = sorted(set(remove) & present)
    if not doomed:
        return None
    script = [f"*{table}"]
    for line in lines:
        if line.startswith("-A "):
            rule = line.split()
            if rule[1] not in doomed and _target(rule) in doomed:
                script.append("-D" + line[2:])
    script += [f"-F {chain}" for chain in doomed] + [f"-X {chain}" for chain in doomed] + ["COMMIT", ""]
    return "\n".join(script)
