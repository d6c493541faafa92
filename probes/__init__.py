"""Probes: the in-trainer step probe and the host, network and GPU pollers."""
