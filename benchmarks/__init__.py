"""Benchmarks of flask-gosession against bare Flask, Flask's cookie session
and Flask-Session, in process and over HTTP.

Run everything with ``python -m benchmarks`` (``--help`` for the flags).
Benchmarks are not tests: nothing here asserts a timing. Every server they
start or talk to is on loopback.
"""
