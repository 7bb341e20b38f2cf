//! Policy files as an operator (or a bad merge) can write them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::job::Job;
use signet::policy::Policy;
use signet::sign::Format;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = Policy::parse(text) else { return };
    let job = Job::parse(
        br#"{"job_id": "j", "key": "release", "artifacts": [{"bucket": "incoming", "key": "a/b.rpm"}],
             "output": {"bucket": "signed", "prefix": "p/"}}"#,
    )
    .unwrap();
    for producer in [None, Some(""), Some("guest"), Some("ci")] {
        let allowed = policy.authorize(&job, producer).is_ok();
        // Deny by default: no identity, no signature.
        assert!(!(allowed && producer.is_none_or(str::is_empty)), "a job without a producer was allowed");
        for f in [Format::Rpm, Format::Deb, Format::Detached, Format::AptRelease] {
            let _ = policy.authorize_format(&job, producer, f);
        }
    }
});
