"""Local stand-ins for outside services, used by the tests and by the local demo."""
