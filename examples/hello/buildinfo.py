"""Shared by app.py and worker.py: facts baked in by build.py, plus the
release identity graven puts in the environment.

Being an imported module, this is the one file Python actually loads from the
__pycache__ that build.py writes (scripts run as __main__ never are).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, "static")


def load():
    """Return the dict build.py wrote; exit clearly if the app was never built."""
    path = os.path.join(STATIC, "build-info.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        sys.exit(f"{path} not found: run build.py first "
                 "(e.g. SOURCE_DATE_EPOCH=0 python3 build.py)")


def release():
    return os.environ.get("GRAVEN_RELEASE") or "unreleased"


def process(default):
    return os.environ.get("GRAVEN_PROCESS") or default
