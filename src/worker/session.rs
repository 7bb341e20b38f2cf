//! One broker connection of a worker: a consuming channel and a confirm-mode publisher.

use std::sync::Arc;

use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::WorkerConfig;
use crate::queue::{self, Publisher};

pub(super) struct Session {
    pub(super) conn: Arc<lapin::Connection>,
    ch: lapin::Channel,
    pub(super) publisher: Publisher,
    pub(super) consumer: lapin::Consumer,
    tag: String,
    /// Approval messages (`NS.approvals`), on a channel of their own.
    approvals_ch: lapin::Channel,
    /// `None` when this worker has no approvals location: it leaves approval messages to
    /// workers that have one, rather than refusing them.
    pub(super) approvals: Option<lapin::Consumer>,
    approvals_tag: String,
}

impl Session {
    /// Connects, declares the topology and starts consuming with `prefetch` deliveries in
    /// hand at most.
    pub(super) async fn open(cfg: &WorkerConfig, prefetch: u16) -> Result<Session, queue::QueueError> {
        // No automatic recovery: a connection that fails is replaced whole (see `run`), so no
        // recovered consumer can hold deliveries that nobody reads.
        let conn = Arc::new(queue::connect_once(&cfg.amqp_url, &cfg.source).await?);
        let ch = conn.create_channel().await?;
        cfg.topology.declare(&ch).await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let publisher = Publisher::open(&conn).await?;
        let tag = format!("{}-{}", cfg.source, uuid::Uuid::new_v4());
        let consumer = ch
            .basic_consume(
                cfg.topology.jobs.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let approvals_ch = conn.create_channel().await?;
        approvals_ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let approvals_tag = format!("{tag}-approvals");
        let approvals = match cfg.approvals {
            Some(_) => Some(
                approvals_ch
                    .basic_consume(
                        cfg.topology.approvals.as_str().into(),
                        approvals_tag.as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?,
            ),
            None => None,
        };
        Ok(Session { conn, ch, publisher, consumer, tag, approvals_ch, approvals, approvals_tag })
    }

    /// Stops the broker from sending more deliveries; those in hand can still be settled.
    pub(super) async fn stop_consuming(&self) {
        let _ = self.ch.basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()).await;
        let _ = self.approvals_ch.basic_cancel(self.approvals_tag.as_str().into(), BasicCancelOptions::default()).await;
    }

    pub(super) async fn close(self) {
        let _ = self.conn.close(200, "worker session closed".into()).await;
    }
}
