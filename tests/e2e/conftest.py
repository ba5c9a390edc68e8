"""The shared Celery `worker` fixture lives in tests/conftest.py (the API tests use it
too)."""
