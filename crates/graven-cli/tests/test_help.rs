//! Help text renders, and reads as documentation.

use crate::common::Graven;

#[test]
fn build_help() {
    let dir = tempfile::tempdir().unwrap();
    let graven = Graven::in_dir(dir.path());
    let run = graven.run(["build", "--help"]);
    insta::assert_snapshot!(run, @r"
        exit code: 0
        ----- stdout -----
        Build a commit into an immutable, content-addressed artifact

        graven exports the commit into a fresh directory (no .git, no untracked
        files), runs graven.toml's [build] command there with a scrubbed
        environment (PATH, HOME, LANG, TMPDIR, SOURCE_DATE_EPOCH, GRAVEN_COMMIT and
        what [build] env and pass_env name: no runtime config), and stores the
        output as an artifact. Building a commit that was already built with the
        same recipe reuses that artifact.

        The command runs in a sandbox (bubblewrap): the export is at /app, its
        working directory and the only writable place besides a private /tmp;
        HOME is /tmp/home; the rest of the machine is visible read-only, so
        toolchains work. No path of this machine reaches the build, so the same
        commit gives the same artifact on every machine. [build] network = false
        takes its network away.

        [build] cache (a list, like ~/.cache/pip and ~/.npm) keeps those
        directories of the sandbox's HOME (or of /tmp) from build to build, in the graven home
        (cache/<app>/), outside /app: package downloads are reused, and never
        reach the artifact. One build of an app uses its caches at a time.
        `graven gc --caches` deletes them.

        Examples:
          graven build                 # HEAD
          graven build v1.4.2 --json   # a tag, output for scripts

        Usage: graven build [OPTIONS] [REV]

        Arguments:
          [REV]
                  The commit to build: a hash, branch or tag

                  [default: HEAD]

        Options:
              --allow-dirty
                  Build the working tree with its uncommitted changes; the build is marked dirty for good

              --home <DIR>
                  Where graven keeps its ledger and store [default: .graven/ at the repository root]

                  [env: GRAVEN_HOME=]

              --app <NAME>
                  The app [default: graven.toml's [app] name, else the repository's directory name; outside
                  a repository, the ledger's only app]

                  [env: GRAVEN_APP=]

              --force
                  Build again even if this commit and recipe were built before

                  Also re-hashes every blob and listing the store already holds for this build and stores
                  again any that `graven verify` would call corrupted: the way to repair a damaged artifact.

              --check-reproducible
                  Build twice in two directories and fail if the outputs differ

              --ledger-url <URL>
                  The ledger's URL [default: the home's embedded SQLite ledger; sqlite:PATH for another
                  file]

                  [env: GRAVEN_LEDGER]

              --no-sandbox
                  Run the build command on the host, not in the sandbox at /app

                  For machines that cannot make namespaces. The build can then write anywhere the user can,
                  and see its host paths; it is marked unsandboxed for good, and never reused for a
                  sandboxed build.

              --store-url <URL>
                  The store's URL [default: the home's local store; file:PATH for another directory]

                  [env: GRAVEN_STORE]

              --no-cache
                  Leave the build caches ([build] cache) out: the build starts from an empty HOME, as on a
                  new machine

              --json
                  Print the result as JSON on stdout

          -h, --help
                  Print help (see a summary with '-h')

          -V, --version
                  Print version
        ----- stderr -----
        ");
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let graven = Graven::in_dir(dir.path());
    let run = graven.run(["build", "--allow-dirt"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: unexpected argument '--allow-dirt' found

          tip: a similar argument exists: '--allow-dirty'

        Usage: graven build --allow-dirty [REV]

        For more information, try '--help'.
        ");
}
