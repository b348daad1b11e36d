"""The release phase: `python3 release.py`, run once per release with that
release's config, before any of its processes start. A real app would run
database migrations here; a non-zero exit must stop the release going out.
"""
import os
import sys


def main():
    release = os.environ.get("GRAVEN_RELEASE") or "unreleased"
    # Test hook: lets graven's tests exercise a failing release phase.
    if os.environ.get("HELLO_FAIL_RELEASE") == "1":
        print(f"release phase for {release}: failing on purpose "
              "(HELLO_FAIL_RELEASE=1)", file=sys.stderr, flush=True)
        return 1
    print(f"release phase for {release}: nothing to migrate", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
