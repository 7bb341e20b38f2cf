//! Job messages as a producer (or any AMQP client) can send them, and approval messages as
//! any broker user can send them to `NS.approvals`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::job::Job;

fuzz_target!(|data: &[u8]| {
    let _ = Job::salvage_id(data, Some("fuzz"));
    if let Ok(job) = Job::parse(data) {
        // A job that parses round-trips, and every name it yields is usable.
        let again = Job::parse(serde_json::to_string(&job).unwrap().as_bytes()).expect("re-parse");
        assert_eq!(job, again);
        for a in &job.artifacts {
            signet::sign::check_output_name(a.name()).expect("artifact name");
        }
        assert!(job.artifacts.len() <= signet::job::MAX_ARTIFACTS);
    }
    let _ = Job::salvage_id(data, None);
    if let Ok(msg) = signet::approval::ApprovalMessage::parse(data) {
        // An approval message that parses round-trips to the same decision.
        let again = signet::approval::ApprovalMessage::parse(serde_json::to_string(&msg).unwrap().as_bytes())
            .expect("re-parse");
        assert_eq!(msg, again);
    }
});
