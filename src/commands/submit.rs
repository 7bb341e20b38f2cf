//! `signet submit`: publish a job with publisher confirms; `--wait` for its event.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};

use crate::cli::SubmitArgs;
use crate::event::Event;
use crate::job::{ArtifactSpec, Job, OutputSpec};
use crate::queue::{self, Client, Publisher};

pub(super) fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.sha256.is_empty() || args.sha256.len() == args.artifacts.len(),
        "give one --sha256 per artifact, or none"
    );
    let mut artifacts = Vec::new();
    for (i, uri) in args.artifacts.iter().enumerate() {
        let rest = uri.strip_prefix("s3://").with_context(|| format!("{uri}: artifacts are s3://bucket/key"))?;
        let (bucket, key) = rest.split_once('/').with_context(|| format!("{uri}: artifacts are s3://bucket/key"))?;
        artifacts.push(ArtifactSpec {
            bucket: bucket.parse().map_err(anyhow::Error::msg)?,
            key: key.parse().map_err(anyhow::Error::msg)?,
            sha256: args
                .sha256
                .get(i)
                .map(|s| s.to_ascii_lowercase().parse())
                .transpose()
                .map_err(anyhow::Error::msg)?,
            format: args.format,
        });
    }
    let job_id = args.job_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let job_key = args.key.to_string();
    let job = Job {
        job_id: job_id.parse().map_err(anyhow::Error::msg)?,
        key: args.key.clone(),
        artifacts,
        output: OutputSpec {
            bucket: args.output_bucket.parse().map_err(anyhow::Error::msg)?,
            prefix: args.output_prefix.parse().map_err(anyhow::Error::msg)?,
        },
        replace_signatures: args.replace_signatures,
    };
    // Round-trip through the parser: what we send is what a worker accepts.
    let body = serde_json::to_vec(&job)?;
    Job::parse(&body)?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        // The broker may be restarting (a deploy, a failover): connecting, subscribing and the
        // confirmed publish are retried together for about two minutes. A retry after a lost
        // confirm can publish the job twice; workers sign it once (the job id is the
        // idempotency key) and answer both.
        let attempt = || publish(&args.broker.namespace, &job_id, &body, args.wait);
        let (client, mut events) = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(30)
                    .with_jitter(),
            )
            .notify(|e, dur| eprintln!("signet: submitting failed ({e:#}); retrying in {dur:?}"))
            .await?;
        eprintln!("submitted job {job_id} to {}", client.topology.jobs);

        let Some(consumer) = events.as_mut() else {
            return Ok(ExitCode::SUCCESS);
        };
        let wait = async {
            while let Some(d) = consumer.next().await {
                let d = d?;
                d.ack(BasicAckOptions::default()).await?;
                if d.properties.correlation_id().as_ref().map(|c| c.as_str()) != Some(job_id.as_str()) {
                    continue;
                }
                let ev: Event = serde_json::from_slice(&d.data).context("malformed event")?;
                // Another producer's job under the same id (with another key) is not ours.
                if ev.data.key.as_deref().is_some_and(|k| k != job_key.as_str()) {
                    continue;
                }
                println!("{}", serde_json::to_string(&ev)?);
                if ev.is_pending() {
                    // A key that needs approvals: the job waits for people; so do we.
                    let needed = ev.data.request.as_ref().map_or(0, |r| r.approvals_required);
                    eprintln!(
                        "job {job_id} is waiting for approvals ({} of {needed}); waiting for its completion",
                        ev.data.approvals.len()
                    );
                    continue;
                }
                return Ok::<_, anyhow::Error>(if ev.succeeded() { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            anyhow::bail!("event stream closed")
        };
        match tokio::time::timeout(Duration::from_secs(args.timeout), wait).await {
            Ok(code) => code,
            Err(_) => {
                eprintln!("signet: no completion event for job {job_id} within {} s", args.timeout);
                Ok(ExitCode::from(2))
            }
        }
    })
}

/// Connects, subscribes to the events first when waiting (so the event cannot be missed),
/// and publishes the job with a confirm.
async fn publish(
    namespace: &str,
    job_id: &str,
    body: &[u8],
    wait: bool,
) -> anyhow::Result<(Client, Option<lapin::Consumer>)> {
    let client = Client::open(namespace, "signet-submit").await?;
    let Client { url, conn, ch, topology } = &client;
    let events = if wait {
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        ch.queue_bind(
            q.name().clone(),
            topology.events.as_str().into(),
            "job.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Some(
            ch.basic_consume(
                q.name().clone(),
                "signet-submit".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?,
        )
    } else {
        None
    };
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(job_id));
    if let Some(user) = queue::amqp_user(url) {
        props = props.with_user_id(user.as_str().into());
    }
    Publisher::open(conn).await?.publish("", &topology.jobs, body, props).await?;
    Ok((client, events))
}
