"""Build step for the hello app: `python3 build.py`, run by graven in a clean
export of the commit.

The output must depend only on the source tree and two inputs that graven
passes in, so that rebuilding a commit yields a byte-identical artifact:
  SOURCE_DATE_EPOCH  build timestamp (required; the wall clock is never read)
  GRAVEN_COMMIT      full commit id, baked into the page (default "unknown")
Runtime config (GREETING, PORT, ...) is deliberately not read here: it belongs
to the release, not the build.
"""
import html
import json
import os
import py_compile
import sys
from datetime import datetime, timezone

APP = "hello"  # keep in step with [app] name in graven.toml

# Set literals are marshalled in hash order, and str hashes are randomised per
# process, so pin the seed before compiling anything (re-exec once to do so).
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)


def fail(message):
    print(f"build.py: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def write(path, text):
    # Fixed encoding and newlines so the bytes never depend on the platform.
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main():
    # Work relative to this file so paths baked into .pyc files are relative
    # too, whatever directory graven exported the commit to.
    os.chdir(os.path.dirname(os.path.abspath(__file__)))

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        fail("SOURCE_DATE_EPOCH is not set; it is required so the build date "
             "comes from the commit, not the clock (try "
             "SOURCE_DATE_EPOCH=$(git log -1 --format=%ct))")
    try:
        built = datetime.fromtimestamp(int(epoch), tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        fail(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix timestamp in seconds")
    commit = os.environ.get("GRAVEN_COMMIT") or "unknown"

    info = {
        "app": APP,
        "commit": commit,
        "commit_short": commit[:7],
        "build_date": built.strftime("%Y-%m-%d %H:%M:%S UTC"),
    }

    with open("templates/index.html.in", encoding="utf-8") as f:
        page = f.read()
    for key, value in info.items():
        page = page.replace(f"@{key.upper()}@", html.escape(value))
    os.makedirs("static", exist_ok=True)
    write("static/index.html", page)
    # Machine-readable copy for the processes (and for humans poking at an artifact).
    write("static/build-info.json", json.dumps(info, indent=2, sort_keys=True) + "\n")

    # UNCHECKED_HASH pycs are never revalidated against source mtimes, so they
    # are reproducible and an immutable artifact never needs to write new ones.
    # Only imported modules (buildinfo) actually load from __pycache__; the
    # entry scripts are compiled anyway so syntax errors fail the build.
    for name in sorted(os.listdir(".")):
        if name.endswith(".py") and name != "build.py":
            try:
                cfile = py_compile.compile(
                    name, doraise=True,
                    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            except py_compile.PyCompileError as e:
                fail(e.msg)
            print(f"build.py: compiled {name} -> {cfile}", flush=True)

    print(f"build.py: built {APP} at commit {info['commit_short']} "
          f"(build date {info['build_date']})", flush=True)


if __name__ == "__main__":
    main()
