//! RabbitMQ: topology, connections, a confirmed publisher, and job deliveries.
//!
//! Names derive from a namespace (default `signet`): jobs queue `NS.jobs` (quorum, durable,
//! dead-lettering to `NS.jobs.dead` through the direct exchange `NS.dlx`), the topic
//! exchange `NS.events` for completion events, and the approvals queue `NS.approvals`
//! (dead-lettering to `NS.approvals.dead`) with its expiry timers `NS.approvals.wait.Ns`.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::event::{self, Event};

/// Broker errors; all are transient from a job's point of view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker refused message: {0}")]
    Nacked(String),
    #[error("broker configuration: {0}")]
    Config(String),
}

/// The broker-side names of one signet deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub jobs: String,
    pub dead: String,
    pub dlx: String,
    pub events: String,
    /// Stream queue that keeps recent events (7 days) for `signet events`.
    pub events_log: String,
    /// Approval messages (approvals, rejections, expiry timers), consumed by workers.
    pub approvals: String,
    /// Approval messages that were refused.
    pub approvals_dead: String,
    /// Broker-side backstop: a message delivered more often than this is dead-lettered
    /// even if no worker survives long enough to fail it.
    pub delivery_limit: i64,
}

impl Topology {
    /// Names under `namespace`.
    pub fn new(namespace: &str) -> Self {
        Topology {
            jobs: format!("{namespace}.jobs"),
            dead: format!("{namespace}.jobs.dead"),
            dlx: format!("{namespace}.dlx"),
            events: format!("{namespace}.events"),
            events_log: format!("{namespace}.events.log"),
            approvals: format!("{namespace}.approvals"),
            approvals_dead: format!("{namespace}.approvals.dead"),
            delivery_limit: 20,
        }
    }

    /// The exclusive queue that is the lock of one job (`NS.lock.JOB_ID`).
    pub fn lock_queue(&self, job_id: &str) -> String {
        format!("{}.lock.{job_id}", self.jobs.trim_end_matches(".jobs"))
    }

    /// The exclusive queue that serializes the workers' appends to the audit index. Its
    /// name cannot be a job's lock: job ids contain no `:`.
    pub fn audit_index_lock(&self) -> String {
        format!("{}.lock:audit-index", self.jobs.trim_end_matches(".jobs"))
    }

    /// The timer queue that holds expiry messages for `delay` and then dead-letters them
    /// into `NS.approvals` (`NS.approvals.wait.SECONDSs`; no consumer reads it).
    pub fn approval_timer(&self, delay: std::time::Duration) -> String {
        format!("{}.wait.{}s", self.approvals, delay.as_secs().max(1))
    }

    /// Declares the timer queue of `delay` (idempotent). Every message in it has the same
    /// TTL, so they expire in the order they were sent, never stuck behind a longer one;
    /// expired messages are dead-lettered at least once into `NS.approvals`.
    pub async fn declare_approval_timer(&self, ch: &Channel, delay: std::time::Duration) -> Result<String, QueueError> {
        let name = self.approval_timer(delay);
        let ttl_ms = delay.as_secs().max(1).saturating_mul(1000);
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(i64::try_from(ttl_ms).unwrap_or(i64::MAX)));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(self.approvals.as_str().into()));
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        let q = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(name.as_str().into(), q, args).await?;
        Ok(name)
    }

    /// Declares everything (idempotent; every worker and producer may call it).
    pub async fn declare(&self, ch: &Channel) -> Result<(), QueueError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(self.dlx.as_str().into(), ExchangeKind::Direct, durable, FieldTable::default()).await?;
        ch.exchange_declare(self.events.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;

        let mut quorum = FieldTable::default();
        quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        let q = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(self.dead.as_str().into(), q, quorum.clone()).await?;
        ch.queue_bind(
            self.dead.as_str().into(),
            self.dlx.as_str().into(),
            self.dead.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

        let mut args = quorum;
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dlx.as_str().into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(self.dead.as_str().into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(self.delivery_limit));
        ch.queue_declare(self.jobs.as_str().into(), q, args).await?;

        let mut quorum = FieldTable::default();
        quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        ch.queue_declare(self.approvals_dead.as_str().into(), q, quorum.clone()).await?;
        ch.queue_bind(
            self.approvals_dead.as_str().into(),
            self.dlx.as_str().into(),
            self.approvals_dead.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let mut args = quorum;
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dlx.as_str().into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(self.approvals_dead.as_str().into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(self.delivery_limit));
        ch.queue_declare(self.approvals.as_str().into(), q, args).await?;

        let mut stream = FieldTable::default();
        stream.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
        stream.insert("x-max-age".into(), AMQPValue::LongString("7D".into()));
        ch.queue_declare(self.events_log.as_str().into(), q, stream).await?;
        ch.queue_bind(
            self.events_log.as_str().into(),
            self.events.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }
}

/// The broker URL from SIGNET_AMQP_URL or the file named by SIGNET_AMQP_URL_FILE (it holds
/// a password, so it is never an argument); default: the local guest account.
pub fn amqp_url_from_env() -> Result<String, String> {
    if let Ok(path) = std::env::var("SIGNET_AMQP_URL_FILE") {
        return std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("cannot read SIGNET_AMQP_URL_FILE {path}: {e}"));
    }
    Ok(std::env::var("SIGNET_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()))
}

/// The user name in an AMQP URL (what RabbitMQ checks `user_id` against).
pub fn amqp_user(url: &str) -> Option<String> {
    url.parse::<lapin::uri::AMQPUri>().ok().map(|u| u.authority.userinfo.username)
}

/// Connects without automatic recovery: the caller replaces a failed connection whole.
pub async fn connect_once(url: &str, name: &str) -> Result<Connection, QueueError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

/// Connects with automatic recovery (reconnect and replay topology after failures).
pub async fn connect(url: &str, name: &str) -> Result<Connection, QueueError> {
    let props = ConnectionProperties::default().with_connection_name(name.into()).enable_auto_recover();
    Ok(Connection::connect(url, props).await?)
}

/// A client's session (producer or event reader): the broker URL from the environment, one
/// channel, and the namespace's topology declared on it.
pub struct Client {
    pub url: String,
    pub conn: Connection,
    pub ch: Channel,
    pub topology: Topology,
}

impl Client {
    /// Connects as `name` and declares the topology of `namespace`.
    pub async fn open(namespace: &str, name: &str) -> Result<Self, QueueError> {
        let url = amqp_url_from_env().map_err(QueueError::Config)?;
        let topology = Topology::new(namespace);
        let conn = connect(&url, name).await?;
        let ch = conn.create_channel().await?;
        topology.declare(&ch).await?;
        Ok(Client { url, conn, ch, topology })
    }
}

/// A channel in confirm mode: every publish waits for the broker's ack.
#[derive(Clone)]
pub struct Publisher {
    ch: Channel,
}

impl Publisher {
    /// Opens a confirm-mode channel.
    pub async fn open(conn: &Connection) -> Result<Self, QueueError> {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { ch })
    }

    /// Publishes and waits for the confirm; a nack or a return is an error.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), QueueError> {
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirm = self.ch.basic_publish(exchange.into(), routing_key.into(), opts, body, props).await?.await?;
        if !confirm.is_ack() {
            return Err(QueueError::Nacked(format!("publish to {exchange:?}/{routing_key} was nacked")));
        }
        if let Some(ret) = confirm.take_message() {
            // Unroutable mandatory messages are acked and returned; for events that means no
            // consumer bound yet, which is not an error (the event is on record in the logs).
            if exchange.is_empty() {
                return Err(QueueError::Nacked(format!(
                    "message to queue {routing_key} was returned: {}",
                    ret.reply_text
                )));
            }
        }
        Ok(())
    }

    /// Publishes a completion event, persistent, confirmed.
    pub async fn publish_event(&self, topology: &Topology, ev: &Event) -> Result<(), QueueError> {
        let body = serde_json::to_vec(ev).map_err(|e| QueueError::Nacked(e.to_string()))?;
        let props = BasicProperties::default()
            .with_content_type(event::CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_correlation_id(ShortString::from(ev.data.job_id.as_str()))
            .with_message_id(ShortString::from(ev.id.as_str()))
            .with_type(ShortString::from(ev.kind.as_str()));
        self.publish(&topology.events, ev.routing_key(), &body, props).await
    }

    /// Publishes an approval message to `NS.approvals`, persistent, confirmed, as `user`
    /// (the broker refuses a `user_id` other than the connection's own).
    pub async fn publish_approval(
        &self,
        topology: &Topology,
        msg: &crate::approval::ApprovalMessage,
        user: Option<&str>,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_vec(msg).map_err(|e| QueueError::Nacked(e.to_string()))?;
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id(ShortString::from(msg.job_id.as_str()))
            .with_message_id(ShortString::from(uuid::Uuid::new_v4().to_string()));
        if let Some(u) = user {
            props = props.with_user_id(u.into());
        }
        self.publish("", &topology.approvals, &body, props).await
    }

    /// Arms the expiry timer of `job_id`: an `expire` message to the timer queue `queue`
    /// (declared by [`Topology::declare_approval_timer`]), which reaches `NS.approvals` after
    /// that queue's TTL.
    pub async fn arm_expiry(&self, queue: &str, job_id: &crate::job::JobId) -> Result<(), QueueError> {
        let body = serde_json::to_vec(&crate::approval::ApprovalMessage::expire(job_id.clone()))
            .map_err(|e| QueueError::Nacked(e.to_string()))?;
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id(ShortString::from(job_id.as_str()));
        self.publish("", queue, &body, props).await
    }
}

/// Reads an integer header (RabbitMQ uses several integer types for x-delivery-count).
pub fn int_header(props: &BasicProperties, name: &str) -> Option<i64> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

/// A job message as the worker sees it: its body, who sent it, which delivery this is, and
/// the three ways to settle it. The AMQP details (headers, ack/nack/reject) stay here.
pub struct JobDelivery {
    inner: lapin::message::Delivery,
}

impl JobDelivery {
    pub fn new(inner: lapin::message::Delivery) -> Self {
        JobDelivery { inner }
    }

    pub fn body(&self) -> &[u8] {
        &self.inner.data
    }

    /// The broker-verified sender (AMQP `user_id`), if the message carries one.
    pub fn producer(&self) -> Option<String> {
        self.inner.properties.user_id().as_ref().map(|u| u.to_string())
    }

    pub fn message_id(&self) -> Option<String> {
        self.inner.properties.message_id().as_ref().map(|m| m.to_string())
    }

    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// Which delivery of the message this is, from 1. The worker retries transient failures
    /// within a delivery, so a number above 1 means earlier deliveries were cut short.
    pub fn attempt(&self) -> i64 {
        int_header(&self.inner.properties, "x-delivery-count").unwrap_or(0) + 1
    }

    /// Done: the broker forgets the message.
    pub async fn ack(&self) -> Result<(), lapin::Error> {
        self.inner.ack(lapin::options::BasicAckOptions::default()).await.map(drop)
    }

    /// Failed for good: the broker dead-letters the message to `NS.jobs.dead`.
    pub async fn dead_letter(&self) -> Result<(), lapin::Error> {
        self.inner.nack(lapin::options::BasicNackOptions { requeue: false, ..Default::default() }).await.map(drop)
    }

    /// Not handled here: back to the queue for another delivery.
    pub async fn hand_back(&self) -> Result<(), lapin::Error> {
        self.inner.reject(lapin::options::BasicRejectOptions { requeue: true }).await.map(drop)
    }
}
