//! Admin routes on the outbox: list, retry one, retry matching. The router has already
//! checked that admin is enabled and the `X-API-Key`.

use bytes::Bytes;
use hyper::StatusCode;
use lucius_core::{OutboxId, OutboxQuery, OutboxStatus, Partition};

use crate::api::{json, truncate, Api, HttpResponse};
use crate::error::ApiError;
use crate::request::{json_object, query_pairs, Fields};
use crate::views::{OutboxEntryView, OutboxList, RetryReport};

/// Entries listed or retried when no `limit` is given.
const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` accepted.
const MAX_LIMIT: u32 = 1000;

/// Filters of the admin outbox routes.
#[derive(Debug, Default)]
struct Filter {
    status: Option<OutboxStatus>,
    partition: Option<Partition>,
    limit: Option<u32>,
}

impl Filter {
    fn from_query(query: Option<&str>) -> Result<Filter, ApiError> {
        let mut f = Filter::default();
        for (k, v) in query_pairs(query)? {
            match k.as_str() {
                "status" => f.status = Some(parse_status(&v)?),
                "partition" => f.partition = Some(parse_partition(&v)?),
                "limit" => f.limit = Some(parse_limit(&v)?),
                other => {
                    return Err(ApiError::bad_query(
                        &truncate(other, 40),
                        "unknown parameter (known: status, partition, limit)",
                    ))
                }
            }
        }
        Ok(f)
    }

    fn query(&self, status: Option<OutboxStatus>, limit: u32) -> OutboxQuery {
        OutboxQuery {
            status,
            partition: self.partition.clone(),
            due_by: None,
            after: None,
            limit: limit as usize,
        }
    }
}

fn parse_status(v: &str) -> Result<OutboxStatus, ApiError> {
    OutboxStatus::parse(v)
        .ok_or_else(|| ApiError::bad_query("status", "expected PENDING, SENT or DEAD"))
}

fn parse_partition(v: &str) -> Result<Partition, ApiError> {
    Partition::parse(v).map_err(|e| ApiError::bad_query("partition", e.to_string()))
}

fn parse_limit(v: &str) -> Result<u32, ApiError> {
    match v.parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_query(
            "limit",
            format!("expected an integer from 1 to {MAX_LIMIT}"),
        )),
    }
}

impl Api {
    /// `GET /v1/admin/outbox?status=&partition=&limit=`.
    pub(crate) async fn list_outbox(&self, query: Option<&str>) -> Result<HttpResponse, ApiError> {
        let f = Filter::from_query(query)?;
        let q = f.query(f.status, f.limit.unwrap_or(DEFAULT_LIMIT));
        let entries: Vec<OutboxEntryView> = self
            .engine
            .list_outbox(&q)
            .await?
            .iter()
            .map(OutboxEntryView::of)
            .collect();
        Ok(json(
            StatusCode::OK,
            &OutboxList {
                count: entries.len(),
                entries,
            },
        ))
    }

    /// `POST /v1/admin/outbox/retry`: filters from the query string and/or a JSON body
    /// (`status`, `partition`, `limit`); without a status, `DEAD` then `PENDING` entries.
    pub(crate) async fn retry_matching(
        &self,
        query: Option<&str>,
        body: &Bytes,
    ) -> Result<HttpResponse, ApiError> {
        let mut f = Filter::from_query(query)?;
        let obj = json_object(body, true)?;
        let mut fields = Fields::new(&obj, &["status", "partition", "limit"]);
        let status = fields.opt_string("status", 16);
        let partition = fields.opt_string("partition", 80);
        let limit = fields.opt_int("limit", 1, MAX_LIMIT);
        fields.finish()?;
        let field_err = |p: &str, e: ApiError| ApiError::schema(vec![(p.into(), e.message)]);
        if let Some(s) = status {
            f.status = Some(parse_status(&s).map_err(|e| field_err("/status", e))?);
        }
        if let Some(p) = partition {
            f.partition = Some(parse_partition(&p).map_err(|e| field_err("/partition", e))?);
        }
        if limit.is_some() {
            f.limit = limit;
        }
        let statuses = match f.status {
            Some(OutboxStatus::Sent) => {
                return Err(ApiError::bad_query(
                    "status",
                    "SENT entries cannot be retried (only DEAD or PENDING)",
                ))
            }
            Some(s) => vec![s],
            None => vec![OutboxStatus::Dead, OutboxStatus::Pending],
        };
        let mut left = f.limit.unwrap_or(DEFAULT_LIMIT);
        let mut retried = 0;
        for s in statuses {
            if left == 0 {
                break;
            }
            let out = self
                .engine
                .retry_outbox_matching(&f.query(Some(s), left))
                .await?;
            retried += out.value;
            left = left.saturating_sub(u32::try_from(out.value).unwrap_or(u32::MAX));
            self.publish_in_background(out.to_publish);
        }
        Ok(json(StatusCode::OK, &RetryReport { retried }))
    }

    /// `POST /v1/admin/outbox/{outboxId}/retry`.
    pub(crate) async fn retry_one(&self, raw: &str) -> Result<HttpResponse, ApiError> {
        let (id, ..) = OutboxId::parse(raw).map_err(|e| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "OUTBOX_NOT_FOUND",
                format!("outbox entry {:?} not found: {e}", truncate(raw, 80)),
            )
        })?;
        let out = self.engine.retry_outbox(&id).await?;
        let view = OutboxEntryView::of(&out.value);
        self.publish_in_background(out.to_publish);
        Ok(json(StatusCode::OK, &view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse() {
        let f = Filter::from_query(Some("status=dead&partition=t1%23202401&limit=5")).unwrap();
        assert_eq!(f.status, Some(OutboxStatus::Dead));
        assert_eq!(f.partition.unwrap().to_string(), "t1#202401");
        assert_eq!(f.limit, Some(5));
        for bad in [
            "status=GONE",
            "partition=t1",
            "limit=0",
            "limit=1001",
            "limit=x",
            "x=1",
        ] {
            let e = Filter::from_query(Some(bad)).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "INVALID_QUERY"), "{bad}");
        }
    }
}
