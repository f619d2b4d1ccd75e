"""Loaded by pytest before Django's settings (`-p tests.environment` in pytest.ini).

The suite runs on the public development key with DEBUG off, as `make run` does; it says
so explicitly, and every server or command a test starts inherits the permission.
"""

import os

os.environ.setdefault("SYMPHAINY_INSECURE_DEV_KEY", "1")
