"""Transports: the only layer that does I/O. See :mod:`reliable_smtp._transports.base`."""
