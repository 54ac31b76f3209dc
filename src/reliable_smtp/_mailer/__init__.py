"""The mailer's parts, one module per concept; the public face is :mod:`reliable_smtp.mailer`.

* ``async_mailer`` - :class:`~reliable_smtp.AsyncMailer`: one send (render, envelope,
  recipient policy, one transaction per chunk of recipients), the retry loop over the
  recipients still pending, each attempt's record and log line;
* ``failure`` - which error a failed send raises (:data:`FAILURE_PRECEDENCE`), its
  headline, and the ambiguous error a foreign exception becomes;
* ``bulk`` - many messages at once: in input order (``stream``) or as each ends
  (``as_completed``, :class:`~reliable_smtp.Completed`), with a bounded window;
* ``sync`` - :class:`~reliable_smtp.Mailer`, the async core on a private loop thread;
* ``values`` - the names they share (the message types, ``SendResultOrError``, ``DEFAULT``).
"""
