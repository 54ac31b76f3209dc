"""The connection check (private: the public names are in :mod:`reliable_smtp.diagnostics`).

Layout:

* ``report`` - the values: :class:`CheckTarget`, :class:`CheckStep`, :class:`CheckReport`;
* ``record`` - :class:`Probe`, which records steps as they run, and the causes and hints
  the check adds to the library's explanation of a failure;
* ``facts`` - what the server offered: the TLS session and the EHLO capabilities;
* ``check`` - :func:`check_connection`, the probe that walks the steps.

How the check works is documented once, in :mod:`reliable_smtp.diagnostics`.
"""
