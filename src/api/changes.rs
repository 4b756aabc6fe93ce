//! `GET /api/v1/chatbots/{chatbotId}/changes`: an agent's change feed, from a sequence
//! number on, optionally waiting (long polling) for the next change.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::contacts::{first, parse_integer};
use super::{App, Ctx};
use crate::domain::{Change, Issues};
use crate::http::{ApiError, Reply};

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;
/// The longest `wait`; longer ones are clamped to it.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The feed query after validation: `after` (default 0), `limit` (default 100, clamped
/// to 1–1000) and `wait` (seconds, fractions allowed, default 0, clamped to 30).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedQuery {
    pub after: u64,
    pub limit: u64,
    pub wait: Duration,
}

pub fn parse_feed_query(query: &[(String, String)]) -> Result<FeedQuery, Issues> {
    let mut issues = Issues::new();
    let after = match first(query, "after").map(|v| (v, parse_integer(v.trim()))) {
        None => 0,
        Some((_, Some(Ok(n)))) => n,
        Some((_, Some(Err(())))) => {
            issues.push("after", "must be at least 0");
            0
        }
        Some((v, None)) => {
            issues.push("after", format!("must be an integer, got \"{v}\""));
            0
        }
    };
    let limit = match first(query, "limit").map(|v| (v, parse_integer(v.trim()))) {
        None => DEFAULT_LIMIT,
        Some((_, Some(Ok(n)))) => n.clamp(1, MAX_LIMIT),
        Some((_, Some(Err(())))) => 1,
        Some((v, None)) => {
            issues.push("limit", format!("must be an integer, got \"{v}\""));
            DEFAULT_LIMIT
        }
    };
    let wait = match first(query, "wait") {
        None => Duration::ZERO,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 => {
                Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64()))
            }
            _ => {
                issues.push(
                    "wait",
                    format!("must be a number of seconds from 0 to 30, got \"{v}\""),
                );
                Duration::ZERO
            }
        },
    };
    if issues.is_empty() {
        Ok(FeedQuery { after, limit, wait })
    } else {
        Err(issues)
    }
}

/// `{"data":[…],"next_after":N}`: the changes after `after`, or — when there are none
/// and the query waits — the first ones committed within `wait`. A range the feed no
/// longer holds (pruned, or numbers it never gave out: the feed started again, as
/// after a restore) is 410 with the oldest number it holds.
pub async fn list(app: &App, ctx: &Ctx, agent: String) -> Result<Reply, ApiError> {
    app.agent_in_scope(&ctx.key, &agent).await?;
    let query = parse_feed_query(&ctx.query).map_err(ApiError::invalid_params)?;
    let deadline = Instant::now() + query.wait;
    let mut signal = app.store.change_signal();
    loop {
        // Marked seen before the read: a change durable after it wakes the wait below.
        signal.borrow_and_update();
        let (owned, after) = (agent.clone(), query.after);
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let page = app.read(move |s| s.changes(&owned, after, limit)).await?;
        if after.saturating_add(1) < page.oldest {
            return Err(ApiError::ChangesGone {
                message:
                    "The changes after this sequence number were pruned (changes.retention_days).",
                oldest: page.oldest,
            });
        }
        if after > page.last {
            return Err(ApiError::ChangesGone {
                message: "The feed has not given out this sequence number: it started again (the agent was recreated, or the data restored).",
                oldest: page.oldest,
            });
        }
        let waiting = page.changes.is_empty() && Instant::now() < deadline;
        if !waiting {
            return Ok(feed_page(&page.changes, after));
        }
        if tokio::time::timeout_at(deadline, signal.changed())
            .await
            .is_err()
        {
            return Ok(feed_page(&[], after));
        }
    }
}

fn feed_page(changes: &[Change], after: u64) -> Reply {
    let next_after = changes.last().map_or(after, |c| c.seq);
    let data: Vec<Value> = changes.iter().map(Change::to_json).collect();
    Reply::json(&json!({ "data": data, "next_after": next_after }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_clamps_and_fractions() {
        assert_eq!(
            parse_feed_query(&[]).unwrap(),
            FeedQuery {
                after: 0,
                limit: 100,
                wait: Duration::ZERO
            }
        );
        let parsed = parse_feed_query(&query(&[
            ("after", "7"),
            ("limit", "5000"),
            ("wait", "0.5"),
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            FeedQuery {
                after: 7,
                limit: 1000,
                wait: Duration::from_millis(500)
            }
        );
        let parsed = parse_feed_query(&query(&[("limit", "0"), ("wait", "3600")])).unwrap();
        assert_eq!((parsed.limit, parsed.wait), (1, MAX_WAIT));
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let issues = parse_feed_query(&query(&[("after", "-1"), ("limit", "x"), ("wait", "-2")]))
            .unwrap_err()
            .into_vec();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["after", "limit", "wait"]);
        assert!(parse_feed_query(&query(&[("wait", "NaN")])).is_err());
    }
}
