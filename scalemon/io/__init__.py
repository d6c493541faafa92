"""I/O: the run dir's files, the transport of records (the probe's datagrams, the monitor's
socket), and the processes of a run. Everything here touches the machine; nothing here decides
what a record means (that is scalemon.state's)."""
