"""Where records and observations come from: a scalemon run's dir and socket (`rundir`), a
followed log (`log`), and the system probes (`system`), behind one `base.Source` interface."""
