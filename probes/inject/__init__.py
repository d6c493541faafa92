"""The step probe for a script with no probe code in it (`scalemon run -- -m MODULE` or
`-- SCRIPT`): `python -m scalemon.probes.inject` patches torch's extension points before the
script runs (patches), turns what the script does into steps (driver), times the script's own
collectives (collectives) and reads what the model says of itself (models)."""
