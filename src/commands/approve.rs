//! `signet pending`, `signet approve`, `signet reject`: the approvers' side of release
//! approvals. The request is read from the approvals location in S3 (the workers' record,
//! not an event anyone could have sent); the decision goes to `NS.approvals` with the
//! approver's broker identity, and the command waits for a worker's answer.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::approval::{ApprovalMessage, RequestState, Requests, grouped_fingerprint};
use crate::cli::{ApprovalsArgs, ApproveArgs, PendingArgs, RejectArgs};
use crate::event::{self, ErrorCode, Event};
use crate::queue::{self, Client, Publisher};
use crate::store::s3::S3Store;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn open(args: &ApprovalsArgs) -> anyhow::Result<(S3Store, Requests)> {
    let requests = Requests::new(&args.approvals).map_err(anyhow::Error::msg)?;
    Ok((S3Store::from_env(args.s3_endpoint.as_deref()).await, requests))
}

fn expiry(state: &RequestState) -> String {
    let left = state.request.remaining(SystemTime::now());
    if left.is_zero() {
        format!("{} (expired)", state.request.expires_at)
    } else {
        let left = Duration::from_secs(left.as_secs());
        format!("{} (in {})", state.request.expires_at, humantime::format_duration(left))
    }
}

/// What a person approves: every line a release manager should read.
fn describe(state: &RequestState) -> String {
    let r = &state.request;
    let approved: Vec<&str> = state.approvals.iter().map(|a| a.approver.as_str()).collect();
    let mut out = format!(
        "job {}\n  key          {}\n  fingerprint  {}\n  producer     {}\n  output       s3://{}/{}\n  \
         requested    {}\n  expires      {}\n  approvals    {} of {} needed{}\n  artifacts    {}\n",
        r.job_id,
        r.key,
        grouped_fingerprint(&r.key_fingerprint),
        r.producer,
        r.output.bucket,
        r.output.prefix,
        r.requested_at,
        expiry(state),
        approved.len(),
        r.approvals_required,
        if approved.is_empty() { String::new() } else { format!(" ({})", approved.join(", ")) },
        r.artifacts.len(),
    );
    for a in &r.artifacts {
        out.push_str(&format!("    {}  {:>12}  {}\n", a.sha256, a.size, a.uri()));
    }
    out
}

pub(super) fn pending(args: PendingArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let (store, requests) = open(&args.approvals).await?;
        let open = requests.open(&store).await.with_context(|| format!("reading {}", requests.location()))?;
        if args.json {
            for s in &open {
                let approvals: Vec<&str> = s.approvals.iter().map(|a| a.approver.as_str()).collect();
                let line = serde_json::json!({
                    "request": s.request,
                    "approvals": approvals,
                    "expired": s.request.remaining(SystemTime::now()).is_zero(),
                });
                println!("{line}");
            }
        } else if open.is_empty() {
            eprintln!("no job is waiting for approvals in {}", requests.location());
        } else {
            for s in &open {
                println!("{}", describe(s));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Reads the request of `job_id` and checks that it can still be decided.
async fn open_request(args: &ApprovalsArgs, job_id: &str) -> anyhow::Result<RequestState> {
    let (store, requests) = open(args).await?;
    let state = requests
        .state(&store, job_id)
        .await
        .with_context(|| format!("reading {}", requests.location()))?
        .with_context(|| format!("job {job_id} has no approval request in {}", requests.location()))?;
    if let Some(c) = &state.closed {
        anyhow::bail!("job {job_id} is no longer waiting: it was {} at {}", c.resolution.as_str(), c.time);
    }
    if state.request.remaining(SystemTime::now()).is_zero() {
        anyhow::bail!("the approval request of job {job_id} expired at {}", state.request.expires_at);
    }
    Ok(state)
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

pub(super) fn approve(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let url = queue::amqp_url_from_env().map_err(anyhow::Error::msg)?;
    let me = queue::amqp_user(&url).context("SIGNET_AMQP_URL names no user: the approver cannot be identified")?;
    runtime()?.block_on(async move {
        let state = open_request(&args.approvals, args.job_id.as_str()).await?;
        eprint!("{}", describe(&state));
        let r = &state.request;
        anyhow::ensure!(
            me != r.producer,
            "you ({me}) submitted job {}: a producer may not approve its own job",
            r.job_id
        );
        anyhow::ensure!(
            !state.approvals.iter().any(|a| a.approver == me),
            "you ({me}) have already approved job {}",
            r.job_id
        );
        if !r.approvers.contains(&me) {
            eprintln!("warning: {me} was not an approver of key {} when the job was submitted", r.key);
        }
        let question = format!(
            "Approve signing these {} artifact(s) with key {} ({}) as {me}?",
            r.artifacts.len(),
            r.key,
            grouped_fingerprint(&r.key_fingerprint)
        );
        if !args.yes && !confirm(&question)? {
            eprintln!("not approved");
            return Ok(ExitCode::from(1));
        }
        // The approval names exactly the digests printed above.
        let msg = ApprovalMessage::approve(r);
        decide(&args.broker.namespace, &me, &msg, args.timeout).await
    })
}

pub(super) fn reject(args: RejectArgs) -> anyhow::Result<ExitCode> {
    let url = queue::amqp_url_from_env().map_err(anyhow::Error::msg)?;
    let me = queue::amqp_user(&url).context("SIGNET_AMQP_URL names no user: the approver cannot be identified")?;
    runtime()?.block_on(async move {
        let state = open_request(&args.approvals, args.job_id.as_str()).await?;
        eprint!("{}", describe(&state));
        let msg = ApprovalMessage::reject(args.job_id.clone(), args.reason.clone());
        // What the worker will check, before anything is sent.
        let body = serde_json::to_vec(&msg)?;
        ApprovalMessage::parse(&body).map_err(anyhow::Error::msg)?;
        decide(&args.broker.namespace, &me, &msg, args.timeout).await
    })
}

/// Publishes `msg` as `me` and waits up to `timeout` s for the worker's answer: exit 0 if
/// it was counted (or signed, or rejected as asked), 1 if refused or failed, 2 on timeout.
async fn decide(namespace: &str, me: &str, msg: &ApprovalMessage, timeout: u64) -> anyhow::Result<ExitCode> {
    let Client { conn, ch, topology, .. } = Client::open(namespace, "signet-approve").await?;
    let job_id = msg.job_id.to_string();
    // Subscribe first, so the answer cannot be missed.
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    for rk in ["job.*", event::RK_APPROVAL_REFUSED] {
        ch.queue_bind(
            q.name().clone(),
            topology.events.as_str().into(),
            rk.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    let mut consumer = ch
        .basic_consume(q.name().clone(), "signet-approve".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    Publisher::open(&conn).await?.publish_approval(&topology, msg, Some(me)).await?;
    eprintln!("sent {:?} for job {job_id} as {me} to {}", msg.decision, topology.approvals);
    if timeout == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let wait = async {
        while let Some(d) = consumer.next().await {
            let d = d?;
            d.ack(BasicAckOptions::default()).await?;
            if d.properties.correlation_id().as_ref().map(|c| c.as_str()) != Some(job_id.as_str()) {
                continue;
            }
            let ev: Event = serde_json::from_slice(&d.data).context("malformed event")?;
            let code = match ev.kind.as_str() {
                event::APPROVAL_REFUSED if ev.data.approver.as_deref() == Some(me) => {
                    let why = ev.data.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
                    eprintln!("refused: {why}");
                    1
                }
                event::PENDING if ev.data.approvals.iter().any(|a| a == me) => {
                    let needed = ev.data.request.as_ref().map_or(0, |r| r.approvals_required);
                    eprintln!(
                        "approval counted: {} of {needed} ({})",
                        ev.data.approvals.len(),
                        ev.data.approvals.join(", ")
                    );
                    0
                }
                event::SUCCEEDED => {
                    eprintln!("job {job_id} is signed (approved by {})", ev.data.approvals.join(", "));
                    0
                }
                event::FAILED => {
                    let err = ev.data.error.as_ref();
                    let rejected = err.is_some_and(|e| e.code == ErrorCode::ApprovalRejected);
                    eprintln!("job {job_id} failed: {}", err.map(|e| e.message.as_str()).unwrap_or(""));
                    if rejected && msg.decision == crate::approval::Decision::Reject { 0 } else { 1 }
                }
                _ => continue,
            };
            println!("{}", serde_json::to_string(&ev)?);
            return Ok::<_, anyhow::Error>(ExitCode::from(code));
        }
        anyhow::bail!("event stream closed")
    };
    match tokio::time::timeout(Duration::from_secs(timeout), wait).await {
        Ok(code) => code,
        Err(_) => {
            eprintln!("no answer from a worker within {timeout} s; the message waits in {}", topology.approvals);
            Ok(ExitCode::from(2))
        }
    }
}
