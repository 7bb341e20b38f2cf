//! `signet events`: completion events as JSON lines, from the `NS.events.log` stream
//! (7 days of history); `--follow` keeps printing new ones.

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::cli::EventsArgs;
use crate::queue::Client;

/// Without --follow, stop after this long without a new event (the history is read).
const IDLE: Duration = Duration::from_secs(2);

pub(super) fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let Client { ch, topology, .. } = Client::open(&args.broker.namespace, "signet-events").await?;
        ch.basic_qos(100, BasicQosOptions::default()).await?;
        let mut consume_args = FieldTable::default();
        consume_args.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
        let mut consumer = ch
            .basic_consume(
                topology.events_log.as_str().into(),
                "signet-events".into(),
                BasicConsumeOptions::default(),
                consume_args,
            )
            .await?;
        loop {
            let next = if args.follow {
                consumer.next().await
            } else {
                match tokio::time::timeout(IDLE, consumer.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                }
            };
            let Some(d) = next else { break };
            let d = d?;
            d.ack(BasicAckOptions::default()).await?;
            if let Some(want) = &args.job_id
                && d.properties.correlation_id().as_ref().map(|c| c.as_str()) != Some(want.as_str())
            {
                continue;
            }
            println!("{}", String::from_utf8_lossy(&d.data));
        }
        Ok(ExitCode::SUCCESS)
    })
}
