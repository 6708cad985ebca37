"""restoredrill: pytest restore drills for Velero-backed, Flux-managed Kubernetes clusters."""

__version__ = "0.1.0"
