"""Recipient validation (private: the public names are in :mod:`reliable_smtp.validation`
and :mod:`reliable_smtp`).

Layout:

* ``syntax`` - the envelope form of one address (email-validator, cached);
* ``problems`` - why an address was refused, and :class:`RecipientsRejectedError`;
* ``resolver`` - the DNS deliverability lookup and its cache;
* ``policy`` - :class:`RecipientPolicy` and :class:`RecipientCheck`, which use them.

The decisions behind them are documented once, in :mod:`reliable_smtp.validation`.
"""
