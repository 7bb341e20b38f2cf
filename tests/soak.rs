//! The soak harness's short variant: a few hundred jobs through three workers while a worker
//! is killed every few seconds, the broker restarts, S3 goes away (once for a while, then in
//! short bursts) and a work directory fills up. Nothing may be lost or wrong (bench/soak.py
//! checks and prints the table; `bench/soak.sh` runs the full 10,000 jobs).

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_short_soak_under_overlapping_faults_loses_nothing() {
    let o = run(Command::new("bash")
        .arg(repo().join("bench/soak.sh"))
        .args(["--jobs", "400", "--outage", "12", "--bursts", "3", "--kill-every", "3", "--sample", "40"])
        .env("SIGNET_SOAK_NO_BUILD", "1")
        .env("SIGNET_SOAK_BIN", signet_bin()));
    let out = text(&o);
    println!("{out}");
    assert!(o.status.success(), "the soak found a problem:\n{out}");
    for row in ["| lost (no event)", "| wrong outcome", "| good jobs dead-lettered", "| output sets incomplete"] {
        let line = out.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no {row} row:\n{out}"));
        assert!(line.trim_end().ends_with("| 0 |") || line.contains("| 0 ("), "{line}");
    }
}
