"""A small, real Django project for the reliable-smtp Django backend's tests."""
