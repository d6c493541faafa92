"""Starting and keeping runs: the launch of a run from `scalemon run` options, the supervisor
that outlives the monitor, the relay of records between nodes, and finding a run from a pid
(`scalemon attach`)."""
