"""Management commands of reliable-smtp: ``reliable_smtp_worker``, ``reliable_smtp_migrate``."""
