//! The `graven` command end to end: the real binary, run in temporary git
//! repositories with a controlled environment, its exit code, stdout and
//! stderr compared with inline snapshots. One test binary, one module per
//! command or flow.

mod common;

mod test_build;
mod test_build_env;
mod test_build_failures;
mod test_crash;
mod test_diff;
mod test_export_verify;
mod test_gc;
mod test_help;
mod test_hostile;
mod test_image;
mod test_init;
mod test_kube;
mod test_logs;
mod test_private;
mod test_push;
mod test_quickstart;
mod test_release;
mod test_resources;
mod test_rollout;
mod test_run;
mod test_runner;
mod test_sandbox;
mod test_secrets;
mod test_status;
mod test_team;
