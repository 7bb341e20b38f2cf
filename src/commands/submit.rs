//! `signet submit`: publish a job with publisher confirms; `--wait` for its event.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
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
    let job = Job {
        job_id: job_id.parse().map_err(anyhow::Error::msg)?,
        key: args.key.clone(),
        artifacts,
        output: OutputSpec {
            bucket: args.output_bucket.parse().map_err(anyhow::Error::msg)?,
            prefix: args.output_prefix.parse().map_err(anyhow::Error::msg)?,
        },
    };
    // Round-trip through the parser: what we send is what a worker accepts.
    let body = serde_json::to_vec(&job)?;
    Job::parse(&body)?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let Client { url, conn, ch, topology } = Client::open(&args.broker.namespace, "signet-submit").await?;

        // Subscribe before publishing, so the event cannot be missed.
        let mut events = if args.wait {
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
            .with_message_id(ShortString::from(job_id.as_str()));
        if let Some(user) = queue::amqp_user(&url) {
            props = props.with_user_id(user.as_str().into());
        }
        Publisher::open(&conn).await?.publish("", &topology.jobs, &body, props).await?;
        eprintln!("submitted job {job_id} to {}", topology.jobs);

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
                println!("{}", serde_json::to_string(&ev)?);
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
