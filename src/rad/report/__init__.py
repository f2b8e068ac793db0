"""The run report: OUT/report.md and a self-contained OUT/report.html built from a run's artifacts."""
