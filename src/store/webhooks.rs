//! Webhook endpoints, their outboxes and their deliveries.
//!
//! An event is queued in the same transaction as the change it reports: for every
//! active endpoint that takes it, an entry in `webhook_outbox` numbered after the
//! endpoint's last (`webhook_queues`). So a change committed before a crash is
//! delivered after the restart, and replaying the write-ahead log queues the same
//! events with the same numbers and ids (the events are derived from the logged
//! changes; only endpoint and delivery writes are logged themselves). An entry leaves
//! the outbox when the delivery holding it succeeds; an endpoint that becomes inactive
//! drops its outbox, and none is queued for it while it is.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::codec::{decode_delivery, decode_event, decode_webhook, encode_event};
use super::redo::Op;
use super::tables::{
    META, META_LAST_EVENT, WEBHOOKS, WEBHOOK_DELIVERIES, WEBHOOK_OUTBOX, WEBHOOK_QUEUES,
};
use super::writer::Txn;
use super::StoreError;
use crate::domain::webhook::{Delivery, DeliveryStatus, Webhook};

/// Deliveries kept per endpoint; older ones are removed as new ones are made.
pub const KEPT_DELIVERIES: u64 = 100;

/// A queued event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub id: String,
    pub kind: String,
    pub created_at: i64,
    pub chatbot_id: String,
    /// The event's `data`, as JSON text.
    pub data: String,
}

impl OutboxEvent {
    /// The event as delivered.
    pub fn to_json(&self) -> Value {
        let data = serde_json::from_str(&self.data).unwrap_or(Value::Null);
        crate::domain::webhook::event_json(
            &self.id,
            &self.kind,
            self.created_at,
            &self.chatbot_id,
            data,
        )
    }
}

/// Every endpoint, by id.
pub fn all(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<Webhook>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (id, bytes) = row?;
        out.push(decode_webhook(id.value(), bytes.value())?);
    }
    Ok(out)
}

/// The events of one write's changes to one agent, queued for the active endpoints
/// that take them: collected by [`Outbox::push`], written by [`Outbox::finish`].
pub struct Outbox<'txn> {
    hooks: Vec<Webhook>,
    agent: String,
    at: i64,
    txn: &'txn Txn,
    events: Vec<(&'static str, String)>,
}

impl<'txn> Outbox<'txn> {
    /// The endpoints that may take events about `agent` (none: queuing costs nothing).
    pub fn open(txn: &'txn Txn, agent: &str, at: i64) -> Result<Self, StoreError> {
        let hooks = all(&txn.open_table(WEBHOOKS)?)?
            .into_iter()
            .filter(|h| h.active && h.chatbot_id.as_deref().is_none_or(|a| a == agent))
            .collect();
        Ok(Self {
            hooks,
            agent: agent.to_owned(),
            at,
            txn,
            events: Vec::new(),
        })
    }

    /// Whether any endpoint takes events of `kind`.
    fn wants(&self, kind: &str) -> bool {
        self.hooks.iter().any(|h| h.takes(&self.agent, kind))
    }

    /// Adds an event of `kind` whose `data` is built only if an endpoint takes it.
    pub fn push(&mut self, kind: &'static str, data: impl FnOnce() -> Value) {
        if self.wants(kind) {
            self.events.push((kind, data().to_string()));
        }
    }

    /// Queues the events pushed, in order: each gets the next event id, and an entry
    /// in the outbox of every endpoint that takes it.
    pub fn finish(self) -> Result<(), StoreError> {
        if self.events.is_empty() {
            return Ok(());
        }
        let mut meta = self.txn.open_table(META)?;
        let mut last_event = meta.get(META_LAST_EVENT)?.map_or(0, |v| v.value());
        let mut queues = self.txn.open_table(WEBHOOK_QUEUES)?;
        let mut outbox = self.txn.open_table(WEBHOOK_OUTBOX)?;
        let mut next: Vec<u64> = Vec::with_capacity(self.hooks.len());
        for hook in &self.hooks {
            next.push(queues.get(hook.id.as_str())?.map_or(0, |v| v.value()));
        }
        for (kind, data) in self.events {
            last_event += 1;
            let event = OutboxEvent {
                id: format!("evt_{last_event:016x}"),
                kind: kind.to_owned(),
                created_at: self.at,
                chatbot_id: self.agent.clone(),
                data,
            };
            for (hook, n) in self.hooks.iter().zip(next.iter_mut()) {
                if hook.takes(&self.agent, kind) {
                    *n += 1;
                    let bytes = encode_event(&hook.id, *n, &event);
                    outbox.insert((hook.id.as_str(), *n), bytes.as_slice())?;
                    self.txn.derived_written(bytes.len() as u64);
                }
            }
        }
        meta.insert(META_LAST_EVENT, last_event)?;
        for (hook, n) in self.hooks.iter().zip(next) {
            queues.insert(hook.id.as_str(), n)?;
        }
        self.txn.fed();
        Ok(())
    }
}

/// The event data of a contact change: the contact after it (before it, for a
/// delete), the change feed's sequence number, and for an update the fields changed.
pub fn contact_data(contact: Value, seq: u64, changed: Option<&[String]>) -> Value {
    let mut data = json!({ "contact": contact, "seq": seq });
    if let (Some(changed), Some(obj)) = (changed, data.as_object_mut()) {
        obj.insert("changed".into(), json!(changed));
    }
    data
}

/// Endpoint `id` as the transaction sees it (`WebhookNotFound` if there is none).
pub fn stored(txn: &Txn, id: &str) -> Result<Webhook, StoreError> {
    let table = txn.open_table(WEBHOOKS)?;
    let found = table.get(id)?;
    match found {
        Some(bytes) => decode_webhook(id, bytes.value()),
        None => Err(StoreError::WebhookNotFound),
    }
}

/// Writes an endpoint (created or changed); one made inactive drops its outbox.
pub fn put(txn: &Txn, id: &str, record: &[u8]) -> Result<(), StoreError> {
    let hook = decode_webhook(id, record)?;
    txn.open_table(WEBHOOKS)?.insert(id, record)?;
    if !hook.active {
        drop_outbox(txn, id)?;
    }
    txn.record(Op::PutWebhook {
        id: id.to_owned(),
        record: Some(record.to_vec()),
    });
    Ok(())
}

/// Removes an endpoint with its outbox and deliveries.
pub fn remove(txn: &Txn, id: &str) -> Result<(), StoreError> {
    remove_unlogged(txn, id)?;
    txn.record(Op::PutWebhook {
        id: id.to_owned(),
        record: None,
    });
    Ok(())
}

fn remove_unlogged(txn: &Txn, id: &str) -> Result<(), StoreError> {
    txn.open_table(WEBHOOKS)?.remove(id)?;
    drop_outbox(txn, id)?;
    txn.open_table(WEBHOOK_QUEUES)?.remove(id)?;
    txn.open_table(WEBHOOK_DELIVERIES)?
        .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
    Ok(())
}

fn drop_outbox(txn: &Txn, id: &str) -> Result<(), StoreError> {
    txn.open_table(WEBHOOK_OUTBOX)?
        .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
    Ok(())
}

/// Removes the endpoints scoped to `agent` (it is being removed; that is logged).
pub fn remove_agent(txn: &Txn, agent: &str) -> Result<(), StoreError> {
    let scoped: Vec<String> = all(&txn.open_table(WEBHOOKS)?)?
        .into_iter()
        .filter(|h| h.chatbot_id.as_deref() == Some(agent))
        .map(|h| h.id)
        .collect();
    for id in scoped {
        remove_unlogged(txn, &id)?;
    }
    Ok(())
}

/// Writes a delivery; a succeeded one takes its events out of the outbox, and the
/// endpoint keeps only its last [`KEPT_DELIVERIES`].
pub fn put_delivery(
    txn: &Txn,
    webhook: &str,
    number: u64,
    record: &[u8],
) -> Result<(), StoreError> {
    let delivery = decode_delivery(webhook, number, record)?;
    let mut table = txn.open_table(WEBHOOK_DELIVERIES)?;
    table.insert((webhook, number), record)?;
    if number > KEPT_DELIVERIES {
        table.retain_in(
            (webhook, 0)..=(webhook, number - KEPT_DELIVERIES),
            |_, _| false,
        )?;
    }
    drop(table);
    if delivery.status == DeliveryStatus::Succeeded {
        txn.open_table(WEBHOOK_OUTBOX)?.retain_in(
            (webhook, delivery.first)..=(webhook, delivery.last),
            |_, _| false,
        )?;
    }
    txn.record(Op::PutDelivery {
        webhook: webhook.to_owned(),
        number,
        record: record.to_vec(),
    });
    Ok(())
}

/// Up to `limit` queued events of an endpoint after queue number `after`, oldest first.
pub fn queued(
    txn: &ReadTransaction,
    webhook: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, OutboxEvent)>, StoreError> {
    let table = txn.open_table(WEBHOOK_OUTBOX)?;
    let mut out = Vec::new();
    let range = table.range::<(&str, u64)>((
        Bound::Excluded((webhook, after)),
        Bound::Included((webhook, u64::MAX)),
    ))?;
    for row in range.take(limit) {
        let (key, value) = row?;
        let n = key.value().1;
        out.push((n, decode_event(webhook, n, value.value())?));
    }
    Ok(out)
}

/// How many events wait in an endpoint's outbox.
pub fn queue_len(txn: &ReadTransaction, webhook: &str) -> Result<u64, StoreError> {
    let last = txn
        .open_table(WEBHOOK_QUEUES)?
        .get(webhook)?
        .map_or(0, |v| v.value());
    let table = txn.open_table(WEBHOOK_OUTBOX)?;
    let first = match table.range((webhook, 0)..=(webhook, u64::MAX))?.next() {
        Some(row) => row?.0.value().1,
        None => return Ok(0),
    };
    Ok(last + 1 - first)
}

/// An endpoint's deliveries, newest first, at most `limit`.
pub fn deliveries(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    webhook: &str,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let mut out = Vec::new();
    for row in table
        .range((webhook, 0)..=(webhook, u64::MAX))?
        .rev()
        .take(limit)
    {
        let (key, value) = row?;
        out.push(decode_delivery(webhook, key.value().1, value.value())?);
    }
    Ok(out)
}
