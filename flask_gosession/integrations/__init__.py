"""Optional integrations with other Flask extensions.

Each module imports its extension only when installed, so importing
:mod:`flask_gosession` never requires them.
"""
