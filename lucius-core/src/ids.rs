//! Identifiers: tenants, jobs, steps, outbox entries and dispatch partitions.
//!
//! Job and outbox ids are *derived*, never drawn at random: a job id is a hash of
//! tenant + idempotency key, and an outbox (directive) id names job, step and attempt.
//! Re-running any write after a crash therefore produces the same ids, which is what
//! makes intake idempotent and lets brokers and workers drop duplicate directives.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason} (got {value:?})")]
pub struct IdError {
    /// Which kind of id.
    pub what: &'static str,
    /// What was expected.
    pub reason: &'static str,
    /// The offending input (truncated).
    pub value: String,
}

fn id_error(what: &'static str, reason: &'static str, value: &str) -> IdError {
    IdError {
        what,
        reason,
        value: value.chars().take(80).collect(),
    }
}

/// Characters allowed in tenant ids: safe in Table Storage keys, URLs and partition names.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as a shared string: a copy costs a reference count, not an allocation.
            pub fn shared(&self) -> Arc<str> {
                Arc::clone(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A tenant: 1–64 characters of `[A-Za-z0-9._-]`.
    TenantId
);
string_id!(
    /// A job id: a UUID-formatted digest of tenant + idempotency key.
    JobId
);
string_id!(
    /// A step id within a protocol (e.g. `ocr`).
    StepId
);
string_id!(
    /// An outbox entry id, which is also the directive id and the Service Bus `MessageId`:
    /// `<jobId>.<stepIndex>.<attempt>`.
    OutboxId
);

impl TenantId {
    /// Parses a tenant id.
    pub fn parse(s: &str) -> Result<TenantId, IdError> {
        if s.is_empty() || s.len() > 64 {
            return Err(id_error("tenantId", "1 to 64 characters", s));
        }
        if !s.chars().all(is_key_char) {
            return Err(id_error(
                "tenantId",
                "only letters, digits, '.', '_' and '-'",
                s,
            ));
        }
        Ok(TenantId(s.into()))
    }
}

/// The value of a lower-case hex digit; 0xff for any other byte.
const HEX_DIGIT: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

/// Appends `n` in decimal.
fn push_decimal(s: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        s.push(char::from(d));
    }
}

/// 16 bytes as a lower-case hyphenated UUID, written into `out`.
fn hyphenated_into<'a>(b: &[u8; 16], out: &'a mut [u8; 36]) -> &'a str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 0;
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(x >> 4)];
        out[at + 1] = HEX[usize::from(x & 0x0f)];
        at += 2;
    }
    // Only ASCII hex digits and hyphens were written.
    std::str::from_utf8(out).unwrap_or_default()
}

impl JobId {
    /// The job id for a tenant's idempotency key: the first 128 bits of
    /// SHA-256(`tenant \0 key`), formatted as a UUID (version 8, RFC 9562).
    pub fn derive(tenant: &TenantId, idempotency_key: &str) -> JobId {
        JobId::from_u128(JobId::derive_u128(tenant, idempotency_key))
    }

    /// [`derive`](JobId::derive)'s id as its number ([`to_u128`](JobId::to_u128)), without
    /// rendering it.
    pub fn derive_u128(tenant: &TenantId, idempotency_key: &str) -> u128 {
        let mut h = Sha256::new();
        h.update(tenant.as_str().as_bytes());
        h.update([0u8]);
        h.update(idempotency_key.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b[6] = (b[6] & 0x0f) | 0x80; // version 8
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
        u128::from_be_bytes(b)
    }

    /// The id's 128 bits, or `None` if it is not a lower-case hyphenated UUID. Ids order
    /// as their numbers do, so stores can index them by this fixed-size key.
    pub fn to_u128(&self) -> Option<u128> {
        // Every store call keys its job by this: a table lookup per digit, no branch per
        // character (the per-character match was 2% of the intake path).
        const POSITIONS: [usize; 32] = {
            let mut p = [0usize; 32];
            let (mut i, mut at) = (0, 0);
            while i < 32 {
                if at == 8 || at == 13 || at == 18 || at == 23 {
                    at += 1;
                }
                p[i] = at;
                i += 1;
                at += 1;
            }
            p
        };
        let s = self.0.as_bytes();
        if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
            return None;
        }
        let mut v: u128 = 0;
        let mut bad = 0u8;
        for at in POSITIONS {
            let d = HEX_DIGIT[usize::from(s[at])];
            bad |= d;
            v = (v << 4) | u128::from(d & 0x0f);
        }
        (bad & 0x80 == 0).then_some(v)
    }

    /// The id whose [`to_u128`](JobId::to_u128) is `v`.
    pub fn from_u128(v: u128) -> JobId {
        let mut buf = [0u8; 36];
        JobId(Arc::from(hyphenated_into(&v.to_be_bytes(), &mut buf)))
    }

    /// Parses a job id as it appears in a URL: a lower-case hyphenated UUID.
    pub fn parse(s: &str) -> Result<JobId, IdError> {
        let ok = s.len() == 36
            && s.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
            });
        if ok {
            Ok(JobId(s.into()))
        } else {
            Err(id_error("jobId", "a lower-case UUID", s))
        }
    }
}

impl StepId {
    /// Parses a step id: 1–64 characters of `[A-Za-z0-9._-]`.
    pub fn parse(s: &str) -> Result<StepId, IdError> {
        if s.is_empty() || s.len() > 64 || !s.chars().all(is_key_char) {
            return Err(id_error(
                "stepId",
                "1 to 64 letters, digits, '.', '_' or '-'",
                s,
            ));
        }
        Ok(StepId(s.into()))
    }
}

impl OutboxId {
    /// The directive id of one attempt of one step.
    pub fn for_attempt(job: &JobId, step_index: u32, attempt: u32) -> OutboxId {
        // Written by hand: one per directive, and `format!` was 1% of the intake path.
        let mut s = String::with_capacity(job.as_str().len() + 22);
        s.push_str(job.as_str());
        for n in [step_index, attempt] {
            s.push('.');
            push_decimal(&mut s, n);
        }
        // From a `&str`: one allocation of the exact size (from the `String`, a second).
        OutboxId(Arc::from(s.as_str()))
    }

    /// Parses an outbox id into its job id, step index and attempt.
    pub fn parse(s: &str) -> Result<(OutboxId, JobId, u32, u32), IdError> {
        let bad = || id_error("outboxId", "<jobId>.<stepIndex>.<attempt>", s);
        let mut parts = s.split('.');
        let (Some(job), Some(idx), Some(att), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let job = JobId::parse(job).map_err(|_| bad())?;
        let idx: u32 = idx.parse().map_err(|_| bad())?;
        let att: u32 = att.parse().map_err(|_| bad())?;
        Ok((OutboxId(s.into()), job, idx, att))
    }

    /// The job this entry belongs to (the prefix before the first `.`).
    pub fn job_id(&self) -> JobId {
        JobId(self.0.split('.').next().unwrap_or_default().into())
    }
}

/// A dispatch partition: `tenant#YYYYMM`, from the tenant and the job's creation month (UTC).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Partition {
    tenant: TenantId,
    year: u16,
    month: u8,
}

impl Partition {
    /// The partition of a job created at `created_at` for `tenant`.
    pub fn of(tenant: &TenantId, created_at: Timestamp) -> Partition {
        let (y, m) = created_at.year_month();
        Partition {
            tenant: tenant.clone(),
            year: y.clamp(0, 9999) as u16,
            month: m,
        }
    }

    /// Parses `tenant#YYYYMM`.
    pub fn parse(s: &str) -> Result<Partition, IdError> {
        let bad = |reason| id_error("partition", reason, s);
        let (tenant, ym) = s
            .rsplit_once('#')
            .ok_or_else(|| bad("the form tenant#YYYYMM"))?;
        let tenant = TenantId::parse(tenant).map_err(|_| bad("a valid tenant before '#'"))?;
        if ym.len() != 6 || !ym.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("six digits YYYYMM after '#'"));
        }
        let year: u16 = ym[..4].parse().map_err(|_| bad("a year"))?;
        let month: u8 = ym[4..].parse().map_err(|_| bad("a month"))?;
        if !(1..=12).contains(&month) {
            return Err(bad("a month from 01 to 12"));
        }
        Ok(Partition {
            tenant,
            year,
            month,
        })
    }

    /// The tenant of this partition.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Whether this partition's month (UTC) is over at `now`: no new job lands in it.
    pub fn is_over(&self, now: Timestamp) -> bool {
        let (y, m) = now.year_month();
        (i32::from(self.year), self.month) < (y, m)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:04}{:02}", self.tenant, self.year, self.month)
    }
}

impl TryFrom<String> for Partition {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Partition::parse(&s)
    }
}

impl From<Partition> for String {
    fn from(p: Partition) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_is_stable_and_tenant_scoped() {
        let t1 = TenantId::parse("t1").unwrap();
        let t2 = TenantId::parse("t2").unwrap();
        let a = JobId::derive(&t1, "k");
        assert_eq!(a, JobId::derive(&t1, "k"));
        assert_ne!(a, JobId::derive(&t2, "k"));
        assert_ne!(a, JobId::derive(&t1, "k2"));
        assert!(JobId::parse(a.as_str()).is_ok(), "{a}");
        assert_eq!(&a.as_str()[14..15], "8");
        // Pinned: ids are persisted, so the derivation must never change (computed
        // independently: SHA-256("t1\0k"), first 16 bytes, UUIDv8 bits set).
        assert_eq!(a.as_str(), "c782045a-37ae-80ab-a294-3ad3023e7fdf");
    }

    #[test]
    fn job_ids_map_to_numbers_in_the_same_order() {
        let t = TenantId::parse("t").unwrap();
        let ids: Vec<JobId> = (0..200)
            .map(|k| JobId::derive(&t, &k.to_string()))
            .collect();
        for a in &ids {
            let n = a.to_u128().unwrap();
            assert_eq!(&JobId::from_u128(n), a);
            for b in &ids {
                assert_eq!(a.cmp(b), n.cmp(&b.to_u128().unwrap()), "{a} {b}");
            }
        }
        assert_eq!(
            JobId::from_u128(0).as_str(),
            "00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(JobId::from_u128(u128::MAX).to_u128(), Some(u128::MAX));
        for bad in [
            "",
            "x",
            "C782045A-37AE-80AB-A294-3AD3023E7FDF",
            "c782045a_37ae-80ab-a294-3ad3023e7fdf",
        ] {
            let id: JobId = serde_json::from_value(serde_json::json!(bad)).unwrap();
            assert_eq!(id.to_u128(), None, "{bad:?}");
        }
    }

    #[test]
    fn outbox_id_round_trips() {
        let j = JobId::derive(&TenantId::parse("t").unwrap(), "k");
        let o = OutboxId::for_attempt(&j, 2, 3);
        let (o2, j2, i, a) = OutboxId::parse(o.as_str()).unwrap();
        assert_eq!((o2, j2.clone(), i, a), (o.clone(), j.clone(), 2, 3));
        assert_eq!(o.job_id(), j);
        assert!(OutboxId::parse("x.1.2").is_err());
        assert!(OutboxId::parse(&format!("{j}.1")).is_err());
    }

    /// `to_u128` as it was first written: a character at a time.
    fn to_u128_reference(s: &str) -> Option<u128> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut v: u128 = 0;
        for (i, &c) in b.iter().enumerate() {
            let digit = match (i, c) {
                (8 | 13 | 18 | 23, b'-') => continue,
                (8 | 13 | 18 | 23, _) => return None,
                (_, b'0'..=b'9') => c - b'0',
                (_, b'a'..=b'f') => c - b'a' + 10,
                _ => return None,
            };
            v = (v << 4) | u128::from(digit);
        }
        Some(v)
    }

    proptest::proptest! {
        /// The table-driven parse decides as the character-at-a-time one, on ids and on
        /// ids with one byte replaced by anything.
        #[test]
        fn to_u128_matches_the_reference(n: u128, at in 0usize..37, byte: u8) {
            let id = JobId::from_u128(n);
            proptest::prop_assert_eq!(id.to_u128(), Some(n));
            let mut b = id.as_str().as_bytes().to_vec();
            if at < b.len() {
                b[at] = byte;
            } else {
                b.push(byte);
            }
            if let Ok(s) = String::from_utf8(b) {
                let odd: JobId = serde_json::from_value(serde_json::json!(s)).unwrap();
                proptest::prop_assert_eq!(odd.to_u128(), to_u128_reference(&s));
            }
        }
    }

    proptest::proptest! {
        /// The hand-written id is the `{job}.{step}.{attempt}` text, for every number.
        #[test]
        fn outbox_id_is_job_step_attempt(key in "[a-z0-9]{1,12}", step: u32, attempt: u32) {
            let j = JobId::derive(&TenantId::parse("t").unwrap(), &key);
            let o = OutboxId::for_attempt(&j, step, attempt);
            proptest::prop_assert_eq!(o.as_str(), format!("{j}.{step}.{attempt}"));
        }
    }

    #[test]
    fn partitions_parse_and_render() {
        let p = Partition::parse("t1#202401").unwrap();
        assert_eq!(p.to_string(), "t1#202401");
        assert_eq!(p.tenant().as_str(), "t1");
        for bad in [
            "t1",
            "t1#2024",
            "t1#202413",
            "#202401",
            "t 1#202401",
            "t1#20240a",
        ] {
            assert!(Partition::parse(bad).is_err(), "{bad}");
        }
        let t = TenantId::parse("acme").unwrap();
        assert_eq!(
            Partition::of(&t, Timestamp(1_709_251_200_000)).to_string(),
            "acme#202403"
        );
    }

    #[test]
    fn tenant_ids_are_checked() {
        assert!(TenantId::parse("a-b_c.d").is_ok());
        for bad in ["", "a#b", "a/b", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }
}
