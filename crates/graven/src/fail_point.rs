//! Fail points let tests stop graven at an exact step, to prove that nothing
//! half-done becomes visible. With `GRAVEN_FAIL_POINT=<name>` set, reaching
//! that point writes `graven: fail point <name> reached` to stderr and then
//! waits forever, for the test to kill the process with SIGKILL.

use crate::env_vars::GRAVEN_FAIL_POINT;

/// Stops here, forever, if `GRAVEN_FAIL_POINT` names `name`.
pub(crate) fn check(name: &str) {
    if std::env::var_os(GRAVEN_FAIL_POINT).is_some_and(|value| value == name) {
        use std::io::Write as _;
        let mut stderr = std::io::stderr();
        // The library never prints, except this line, which only tests ask for.
        let _ = writeln!(stderr, "graven: fail point {name} reached");
        let _ = stderr.flush();
        loop {
            std::thread::park();
        }
    }
}
