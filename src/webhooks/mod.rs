//! Webhook deliveries: the store queues events in the commits that make them (see
//! `store::webhooks`); this sends them. One task per active endpoint with events
//! queued: it sends the oldest (up to `webhooks.batch_max`) as one signed delivery and
//! sends nothing later until that delivery succeeded, so an endpoint gets its events
//! in order. A failed attempt is tried again after [`backoff`] (from 1 s, doubling, at
//! most an hour, with jitter); a delivery failing for `webhooks.max_age_hours`
//! deactivates its endpoint, with the reason. A failed attempt is recorded before the
//! retry; a succeeded delivery is recorded (taking its events out of the queue) while
//! the next one is sent. A crash before the record sends it again (at least once).

pub mod send;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use self::send::Sender;
use crate::clock::unix_now;
use crate::domain::webhook::{backoff, signature, Attempt, Delivery, DeliveryStatus, Webhook};
use crate::store::{Store, StoreError};

/// How deliveries are made (`webhooks.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Most events in one delivery.
    pub batch_max: usize,
    /// How long a delivery may keep failing before its endpoint is deactivated.
    pub max_age: Duration,
}

/// How often a waiting retry checks whether it was retried by hand or its endpoint
/// changed, and how often endpoints are looked at without a write waking them.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Deliveries whose records may be in flight at once: sending goes on while the
/// succeeded ones are recorded.
const SAVING: usize = 8;

/// Runs until dropped: starts a task for each active endpoint whose events wait,
/// whenever a write queues events or every [`LOOK_EVERY`].
pub async fn run(store: Arc<dyn Store>, sender: Arc<Sender>, settings: Settings) {
    let mut signal = store.change_signal();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut running: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    loop {
        signal.borrow_and_update();
        running.retain(|_, task| !task.is_finished());
        while tasks.try_join_next().is_some() {}
        match store.webhooks() {
            Ok(hooks) => {
                for hook in hooks.into_iter().filter(|h| h.active) {
                    if running.contains_key(&hook.id) {
                        continue;
                    }
                    let task = tasks.spawn(deliver(
                        Arc::clone(&store),
                        Arc::clone(&sender),
                        settings.clone(),
                        hook.id.clone(),
                    ));
                    running.insert(hook.id, task);
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the webhooks"),
        }
        tokio::select! {
            _ = signal.changed() => {}
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// Delivers an endpoint's queued events until none is left, or it is inactive or gone.
async fn deliver(store: Arc<dyn Store>, sender: Arc<Sender>, settings: Settings, id: String) {
    if let Err(err) = deliver_all(&store, &sender, &settings, &id).await {
        match err {
            StoreError::WebhookNotFound => {}
            err => tracing::warn!(webhook = %id, error = %err, "webhook deliveries stopped"),
        }
    }
}

async fn deliver_all(
    store: &Arc<dyn Store>,
    sender: &Sender,
    settings: &Settings,
    id: &str,
) -> Result<(), StoreError> {
    let newest = store.deliveries(id, 1)?.into_iter().next();
    let mut next_id = newest.as_ref().map_or(1, |d| d.id + 1);
    // A delivery left pending (failing) by an earlier task or process goes first.
    let mut current = newest.filter(|d| d.status == DeliveryStatus::Pending);
    // Queue numbers up to here were sent; their records may still be on the way.
    let mut sent_through = 0;
    let mut saving: JoinSet<Result<Delivery, StoreError>> = JoinSet::new();
    let result = loop {
        let Some(hook) = store.webhook(id)?.filter(|h| h.active) else {
            break Ok(());
        };
        let mut delivery = match current.take() {
            // A failing delivery: retried by hand meanwhile, perhaps.
            Some(failing) => {
                let kept = usize::try_from(crate::store::KEPT_DELIVERIES).unwrap_or(usize::MAX);
                let stored = store
                    .deliveries(id, kept)?
                    .into_iter()
                    .find(|d| d.id == failing.id);
                match stored {
                    Some(stored) if stored.status != DeliveryStatus::Pending => {
                        sent_through = stored.last;
                        continue;
                    }
                    Some(stored) => stored,
                    None => failing,
                }
            }
            None => match next_batch(store, id, sent_through, settings.batch_max).await? {
                Some(mut delivery) => {
                    delivery.id = next_id;
                    next_id += 1;
                    delivery
                }
                None => break Ok(()),
            },
        };
        if let Some(due) = delivery.next_attempt {
            let wait = due - unix_now();
            if wait > 0 {
                tokio::time::sleep(LOOK_EVERY.min(Duration::from_secs(wait.unsigned_abs()))).await;
                current = Some(delivery);
                continue;
            }
        }
        if !attempt(sender, &hook, &mut delivery).await {
            sent_through = delivery.last;
            saving.spawn(store.save_delivery(id.to_owned(), delivery));
            while saving.len() >= SAVING {
                if let Some(saved) = saving.join_next().await {
                    joined(saved)?;
                }
            }
            continue;
        }
        let now = unix_now();
        let failing_for = Duration::from_secs((now - delivery.created_at).max(0).unsigned_abs());
        if failing_for >= settings.max_age {
            give_up(store.as_ref(), id, delivery, settings.max_age, now).await?;
            break Ok(());
        }
        let failures = delivery.attempts.len() as u32;
        let wait = backoff(failures, rand::random::<f64>());
        delivery.next_attempt = Some(now + wait.as_secs().max(1) as i64);
        current = Some(store.save_delivery(id.to_owned(), delivery).await?);
        // The first retries come sooner than a second's resolution allows; the wait
        // is slept here, then the loop reads the delivery again (a retry by hand, a
        // deactivation or a deletion may have happened meanwhile).
        tokio::time::sleep(wait.min(LOOK_EVERY)).await;
    };
    // Every record is written before the task ends: the next one starts from them.
    while let Some(saved) = saving.join_next().await {
        joined(saved)?;
    }
    result
}

fn joined(
    saved: Result<Result<Delivery, StoreError>, tokio::task::JoinError>,
) -> Result<(), StoreError> {
    match saved {
        Ok(saved) => saved.map(drop),
        Err(err) => Err(StoreError::Backend(format!(
            "recording a delivery failed: {err}"
        ))),
    }
}

/// Marks `delivery` failed and deactivates the endpoint, saying why.
async fn give_up(
    store: &dyn Store,
    id: &str,
    mut delivery: Delivery,
    max_age: Duration,
    now: i64,
) -> Result<(), StoreError> {
    let reason = format!(
        "deliveries failed for {} hours (webhooks.max_age_hours); last: {}",
        max_age.as_secs_f64() / 3600.0,
        last_failure(&delivery)
    );
    delivery.status = DeliveryStatus::Failed;
    delivery.next_attempt = None;
    store.save_delivery(id.to_owned(), delivery).await?;
    store
        .update_webhook(
            id.to_owned(),
            Box::new(move |mut hook: Webhook| {
                hook.active = false;
                hook.disabled_reason = Some(reason);
                hook.updated_at = now;
                Ok(hook)
            }),
        )
        .await?;
    Ok(())
}

/// A new delivery of the oldest events queued after `after`, or `None` when none is.
/// The events are read on the blocking pool: a batch may be thousands of them.
async fn next_batch(
    store: &Arc<dyn Store>,
    id: &str,
    after: u64,
    batch_max: usize,
) -> Result<Option<Delivery>, StoreError> {
    let (owned, webhook) = (Arc::clone(store), id.to_owned());
    let events =
        tokio::task::spawn_blocking(move || owned.queued_events(&webhook, after, batch_max))
            .await
            .map_err(|err| StoreError::Backend(format!("reading the queue failed: {err}")))??;
    let (Some((first, _)), Some((last, _))) = (events.first(), events.last()) else {
        return Ok(None);
    };
    let (first, last) = (*first, *last);
    let event_ids = events.iter().map(|(_, e)| e.id.clone()).collect();
    let body: Vec<Value> = events.iter().map(|(_, e)| e.to_json()).collect();
    Ok(Some(Delivery {
        id: 0,
        event_ids,
        first,
        last,
        body: json!({ "events": body }).to_string(),
        status: DeliveryStatus::Pending,
        attempts: Vec::new(),
        next_attempt: None,
        created_at: unix_now(),
    }))
}

/// Sends `delivery` once, signed with the endpoint's secrets, and records the attempt;
/// on a 2xx it is `Succeeded`. Returns whether the attempt failed.
pub async fn attempt(sender: &Sender, hook: &Webhook, delivery: &mut Delivery) -> bool {
    let now = unix_now();
    let body = Bytes::from(delivery.body.clone());
    let headers = [
        (
            "contactd-signature",
            signature(&hook.signing_secrets(now), now, &body),
        ),
        ("contactd-event-ids", delivery.event_ids.join(",")),
    ];
    let record = match sender.post(&hook.url, &headers, body).await {
        Ok(answer) => Attempt {
            at: now,
            response_code: Some(answer.status),
            response_body: answer.body,
            error: (!(200..300).contains(&answer.status)).then(|| {
                if (300..400).contains(&answer.status) {
                    "redirects are not followed".to_owned()
                } else {
                    format!("answered {}", answer.status)
                }
            }),
        },
        Err(err) => Attempt {
            at: now,
            response_code: None,
            response_body: String::new(),
            error: Some(err),
        },
    };
    let failed = record.error.is_some();
    delivery.attempts.push(record);
    if !failed {
        delivery.status = DeliveryStatus::Succeeded;
        delivery.next_attempt = None;
    }
    failed
}

fn last_failure(delivery: &Delivery) -> String {
    delivery
        .attempts
        .last()
        .and_then(|a| a.error.clone())
        .unwrap_or_default()
}
