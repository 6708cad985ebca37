"""Restore drills: plans read from the catalogue, and the runners that carry them out on a cluster."""
