"""restoredrill's pytest plugins; the logic lives in the `restoredrill` package."""

pytest_plugins = (
    "fixtures.options",
    "fixtures.gitops",
    "fixtures.static",
    "fixtures.reporting",
    "fixtures.cluster",
    "fixtures.platform",
    "fixtures.drills",
)
