"""reliable-smtp: send transactional email and know exactly what happened to every message."""
