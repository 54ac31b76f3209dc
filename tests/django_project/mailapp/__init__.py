"""The test project's app: it confirms orders by mail."""
