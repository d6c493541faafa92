"""The state: a pure fold of records and observations into what the monitor knows of a run
(`fold.RunState`, changed only through `apply`), the alert rules, the analysis of the recent
steps, and the frozen `summary.Summary` every view reads. No I/O (an import-linter contract)."""
