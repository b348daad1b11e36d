//! Library-level tests of graven: the store conformance suite and the build,
//! export, verify and ledger behaviour, exercised through the public API with
//! real git repositories in temporary directories. No CLI; each test is fast.

mod ledger_conformance;
mod store_conformance;
mod support;
mod test_build;
mod test_export;
mod test_git;
mod test_ledger;
mod test_postgres;
mod test_properties;
mod test_runner;
mod test_s3;
mod test_status;
mod test_store;
mod test_verify;
