"""Transports: the only layer that does I/O. See :mod:`reliable_smtp.transports.base`."""
