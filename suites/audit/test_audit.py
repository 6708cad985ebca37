"""The read-only audit of a cluster's backups, one test per check.

Run it with `pytest suites -m audit --cluster-kubeconfig K [--cluster-context C]`. The cluster is
read once (GET requests only); each test fails on its check's errors, naming the object and the
fix, and reports its warnings. `restoredrill audit` prints the same findings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import allure
import pytest

from restoredrill.audit import CHECKS, AuditReport, audit_cluster, render_text
from restoredrill.cluster import ClusterHandle

pytestmark = [pytest.mark.audit, pytest.mark.cluster]


class AuditWarning(UserWarning):
    """A finding the audit reports without failing (an opted-out volume, a tainted node)."""


@pytest.fixture(scope="module")
def audit_report(cluster: ClusterHandle) -> AuditReport:
    report = audit_cluster(cluster.kubeconfig, cluster.context)
    allure.attach(render_text(report), name="audit", attachment_type=allure.attachment_type.TEXT)
    return report


@pytest.mark.parametrize("check", list(CHECKS))
def test_audit(check: str, audit_report: AuditReport, record_result: Callable[..., Any]) -> None:
    allure.dynamic.title(f"audit: {CHECKS[check]}")
    allure.dynamic.story("audit")
    allure.dynamic.label("scenario", "audit")
    found = audit_report.of(check)
    errors = [f.render() for f in found if f.severity == "error"]
    warned = [f.render() for f in found if f.severity == "warning"]
    record_result(scenario="audit", check=check, errors=len(errors), warnings=warned,
                  checked=dict(audit_report.checked))
    for text in [*errors, *warned]:
        allure.attach(text, name=text.split(":", 1)[0], attachment_type=allure.attachment_type.TEXT)
    for text in warned:
        warnings.warn(AuditWarning(text), stacklevel=1)
    if errors:
        pytest.fail(f"{len(errors)} finding(s):\n" + "\n".join(errors), pytrace=False)
