//! `e2e`: the end-to-end benchmark harness (see `ringlb_bench::e2e` and README.md).
//!
//! Exit status: 0 when every row forwarded correctly, 1 when a measurement failed, 2 on a
//! setup error, 130 when interrupted.

use std::process::ExitCode;

use clap::Parser;
use ringlb_bench::e2e::{self, BenchError, Options};

fn main() -> ExitCode {
    let opts = Options::parse();
    match e2e::run(&opts) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("e2e: {n} measurement(s) FAILED (see Problems in the report)");
            ExitCode::FAILURE
        }
        Err(BenchError::Interrupted) => {
            eprintln!("e2e: interrupted; children stopped");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("e2e: {e}");
            ExitCode::from(2)
        }
    }
}
