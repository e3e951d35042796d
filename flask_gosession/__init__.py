"""flask-gosession: server-side sessions for Flask."""
