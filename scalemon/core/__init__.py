"""The pure core: the record schema, the run dir's names, typed configs, units, the scaling
model, the plan and log parsing. Data and arithmetic only: nothing here opens a file, a
socket or a process (an import-linter contract checks it)."""
