"""The flask-gosession demo app (``example.app``); not part of the package."""
