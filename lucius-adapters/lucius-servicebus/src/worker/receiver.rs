//! [`Receiver`]: peek-lock receives from a queue or a topic subscription through
//! `azure_messaging_servicebus`, and the [`Delivery`] whose lock completes (deletes),
//! abandons (unlocks) or renews the message.

use std::sync::Arc;
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::HttpClient;
use azure_messaging_servicebus::service_bus::{
    PeekLockResponse, QueueClient, SubscriptionReceiver, TopicClient,
};

use super::WorkerError;
use crate::connection::ConnectionString;
use crate::publisher::{class_of_status, error_chain, meaning, Class};

/// Where a worker receives directives from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A queue.
    Queue(String),
    /// A subscription of a topic.
    Subscription {
        /// The topic.
        topic: String,
        /// The subscription.
        subscription: String,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Queue(q) => write!(f, "queue {q:?}"),
            Source::Subscription {
                topic,
                subscription,
            } => write!(f, "subscription {subscription:?} of topic {topic:?}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Client {
    Queue(QueueClient),
    Subscription(SubscriptionReceiver),
}

/// Receives messages with peek-lock.
#[derive(Debug, Clone)]
pub struct Receiver {
    client: Client,
    source: Source,
    timeout: Duration,
}

impl Receiver {
    /// A receiver of `source`; each broker request is bounded by `timeout` (on top of the
    /// long-poll wait for receives).
    pub fn new(
        conn: &ConnectionString,
        http: Arc<dyn HttpClient>,
        source: Source,
        timeout: Duration,
    ) -> Result<Receiver, WorkerError> {
        let broker = |e: azure_core::Error| WorkerError::Broker {
            permanent: true,
            message: format!("cannot build a client for {source}: {e}"),
        };
        let ns = conn.namespace();
        let client = match &source {
            Source::Queue(q) => Client::Queue(
                QueueClient::new(http, ns, q, conn.key_name.clone(), conn.key.clone())
                    .map_err(broker)?,
            ),
            Source::Subscription {
                topic,
                subscription,
            } => Client::Subscription(
                TopicClient::new(http, ns, topic, conn.key_name.clone(), conn.key.clone())
                    .map_err(broker)?
                    .subscription_receiver(subscription),
            ),
        };
        Ok(Receiver {
            client,
            source,
            timeout,
        })
    }

    /// The next message, waiting up to `wait` (whole seconds, the REST API's unit) for
    /// one; `None` if none came.
    pub async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, WorkerError> {
        let call = async {
            match &self.client {
                Client::Queue(c) => c.peek_lock_message2(Some(wait)).await,
                Client::Subscription(c) => c.peek_lock_message2(Some(wait)).await,
            }
        };
        let rsp = match tokio::time::timeout(wait + self.timeout, call).await {
            Err(_) => {
                return Err(WorkerError::Broker {
                    permanent: false,
                    message: format!(
                        "receiving from {} timed out after {} ms",
                        self.source,
                        (wait + self.timeout).as_millis()
                    ),
                })
            }
            Ok(Err(e)) => return Err(broker_error(&e, &format!("receiving from {}", self.source))),
            Ok(Ok(rsp)) => rsp,
        };
        let status = u16::from(*rsp.status());
        match status {
            204 => Ok(None),
            200..=299 => Ok(Some(Delivery::new(rsp, self.timeout))),
            _ => Err(status_error(
                status,
                &format!("receiving from {}", self.source),
            )),
        }
    }
}

/// One locked message.
pub struct Delivery {
    lock: PeekLockResponse,
    body: String,
    message_id: Option<String>,
    delivery_count: Option<i32>,
    timeout: Duration,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message_id", &self.message_id)
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    fn new(lock: PeekLockResponse, timeout: Duration) -> Delivery {
        let props = lock.broker_properties();
        Delivery {
            body: lock.body(),
            message_id: props.as_ref().map(|p| p.message_id.clone()),
            delivery_count: props.as_ref().map(|p| p.delivery_count),
            lock,
            timeout,
        }
    }

    /// The body.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The broker's `MessageId`, if it sent broker properties.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// How many times the broker delivered it (1 on the first delivery).
    pub fn delivery_count(&self) -> Option<i32> {
        self.delivery_count
    }

    /// Completes the message: it is deleted.
    pub async fn complete(&self) -> Result<(), WorkerError> {
        self.bounded("completing", async {
            self.lock.delete_message().await.map(drop)
        })
        .await
    }

    /// Abandons the message: unlocked for redelivery (the broker dead-letters it after
    /// the entity's max delivery count).
    pub async fn abandon(&self) -> Result<(), WorkerError> {
        self.bounded("abandoning", self.lock.unlock_message()).await
    }

    /// Renews the message's lock.
    pub async fn renew(&self) -> Result<(), WorkerError> {
        self.bounded("renewing the lock of", self.lock.renew_message_lock())
            .await
    }

    async fn bounded(
        &self,
        what: &str,
        op: impl std::future::Future<Output = azure_core::Result<()>>,
    ) -> Result<(), WorkerError> {
        let what = format!(
            "{what} message {}",
            self.message_id.as_deref().unwrap_or("(no id)")
        );
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(broker_error(&e, &what)),
            Err(_) => Err(WorkerError::Broker {
                permanent: false,
                message: format!("{what} timed out after {} ms", self.timeout.as_millis()),
            }),
        }
    }
}

fn status_error(status: u16, what: &str) -> WorkerError {
    WorkerError::Broker {
        permanent: class_of_status(status) == Class::Permanent,
        message: format!("{what}: HTTP {status} ({})", meaning(status)),
    }
}

fn broker_error(e: &azure_core::Error, what: &str) -> WorkerError {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => status_error(u16::from(*status), what),
        ErrorKind::DataConversion => WorkerError::Broker {
            permanent: false,
            message: format!("{what}: unreadable answer: {}", error_chain(e)),
        },
        _ => WorkerError::Broker {
            permanent: false,
            message: format!("{what}: {}", error_chain(e)),
        },
    }
}
