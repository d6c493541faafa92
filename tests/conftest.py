"""Hypothesis runs the same examples on every `make test` (derandomized, no deadline), so a
failure in CI is one anybody can reproduce, and a slow shared machine cannot fail a test on
time alone. `make fuzz` is where new examples are searched for: random, and many more."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("replay", derandomize=True, deadline=None, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", settings.get_profile("replay"), derandomize=False,
                          max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "replay"))
