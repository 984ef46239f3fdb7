//! [`ConnectionString`]: the Service Bus connection string, parsed into where to send and
//! how to sign, with a [`ConnectionStringError`] naming the missing or bad part.

use std::fmt;

use url::Url;

/// The DNS suffix of Azure Service Bus namespaces in the public cloud.
pub const AZURE_SUFFIX: &str = ".servicebus.windows.net";

/// DNS suffixes of Service Bus in Azure's national clouds: real Service Bus, reached over
/// HTTPS at their own host (the crate only builds public-cloud URLs).
pub const NATIONAL_CLOUD_SUFFIXES: &[&str] = &[
    ".servicebus.chinacloudapi.cn",
    ".servicebus.usgovcloudapi.net",
    ".servicebus.cloudapi.de",
];

/// A parsed Service Bus connection string:
/// `Endpoint=sb://<ns>.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…`
/// `[;EntityPath=…][;UseDevelopmentEmulator=true]`.
///
/// Keys are matched case-insensitively, empty segments (a trailing `;`) are ignored, and a
/// value may contain `=` (base64 keys end with it). Unknown keys are ignored, as the Azure
/// SDKs do, except `SharedAccessSignature`, which this adapter does not support.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The endpoint, e.g. `sb://contoso.servicebus.windows.net/`.
    pub endpoint: Url,
    /// The `SharedAccessKeyName` (the policy name, `skn` in the signature).
    pub key_name: String,
    /// The `SharedAccessKey`, used as-is (its UTF-8 bytes) as the HMAC-SHA256 key.
    pub key: String,
    /// The `EntityPath`, if the string is scoped to one queue or topic.
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`: the endpoint is a local emulator spoken to over
    /// plain HTTP.
    pub use_development_emulator: bool,
}

/// Why a connection string was refused. Each variant names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionStringError {
    /// Nothing but whitespace and separators.
    #[error("the Service Bus connection string is empty; expected `Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=<name>;SharedAccessKey=<key>`")]
    Empty,
    /// A segment without `=`.
    #[error("the Service Bus connection string has a segment without `=`: {segment:?}; expected `Key=Value` pairs separated by `;`")]
    Malformed {
        /// The segment (a key name or garbage; never the key value, which has `=`).
        segment: String,
    },
    /// A required part is missing or empty.
    #[error("the Service Bus connection string has no {part} (expected `{part}=…`)")]
    Missing {
        /// `Endpoint`, `SharedAccessKeyName` or `SharedAccessKey`.
        part: &'static str,
    },
    /// A part appears twice.
    #[error("the Service Bus connection string sets {part} twice")]
    Duplicate {
        /// The repeated key, as written.
        part: String,
    },
    /// The `Endpoint` is not a usable URL.
    #[error("the Service Bus connection string's Endpoint {value:?} is not usable: {reason}")]
    BadEndpoint {
        /// The value found.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// `UseDevelopmentEmulator` is not `true` or `false`.
    #[error("the Service Bus connection string's UseDevelopmentEmulator is {value:?}; expected `true` or `false`")]
    BadFlag {
        /// The value found.
        value: String,
    },
    /// The `EntityPath` is not a usable entity name.
    #[error("the Service Bus connection string's EntityPath {value:?} is not usable: {reason}")]
    BadEntityPath {
        /// The value found.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A form this adapter does not support.
    #[error("the Service Bus connection string uses {part}, which is not supported; use SharedAccessKeyName and SharedAccessKey")]
    Unsupported {
        /// The unsupported key.
        part: &'static str,
    },
}

impl ConnectionString {
    /// Parses a connection string.
    pub fn parse(s: &str) -> Result<ConnectionString, ConnectionStringError> {
        let mut endpoint = None;
        let mut key_name = None;
        let mut key = None;
        let mut entity_path = None;
        let mut emulator = None;
        let mut any = false;
        for segment in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            any = true;
            let Some((name, value)) = segment.split_once('=') else {
                return Err(ConnectionStringError::Malformed {
                    segment: segment.chars().take(64).collect(),
                });
            };
            let (name, value) = (name.trim(), value.trim());
            let slot = match name.to_ascii_lowercase().as_str() {
                "endpoint" => &mut endpoint,
                "sharedaccesskeyname" => &mut key_name,
                "sharedaccesskey" => &mut key,
                "entitypath" => &mut entity_path,
                "usedevelopmentemulator" => &mut emulator,
                "sharedaccesssignature" => {
                    return Err(ConnectionStringError::Unsupported {
                        part: "SharedAccessSignature",
                    })
                }
                _ => continue,
            };
            if slot.is_some() {
                return Err(ConnectionStringError::Duplicate {
                    part: name.to_owned(),
                });
            }
            *slot = Some(value.to_owned());
        }
        if !any {
            return Err(ConnectionStringError::Empty);
        }
        let use_development_emulator = match emulator.as_deref() {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(ConnectionStringError::BadFlag {
                    value: v.to_owned(),
                })
            }
        };
        let endpoint = parse_endpoint(&required(endpoint, "Endpoint")?)?;
        let entity_path = match entity_path.filter(|e| !e.is_empty()) {
            Some(e) => Some(check_entity(e)?),
            None => None,
        };
        Ok(ConnectionString {
            endpoint,
            key_name: required(key_name, "SharedAccessKeyName")?,
            key: required(key, "SharedAccessKey")?,
            entity_path,
            use_development_emulator,
        })
    }

    /// The endpoint's host, e.g. `contoso.servicebus.windows.net` or `localhost`.
    pub fn host(&self) -> &str {
        self.endpoint.host_str().unwrap_or_default()
    }

    /// Whether this is an Azure namespace (`*.servicebus.windows.net`, emulator flag off),
    /// reached over HTTPS as the crate builds its URLs.
    pub fn is_azure(&self) -> bool {
        !self.use_development_emulator && azure_namespace(self.host()).is_some()
    }

    /// Whether this is a namespace of an Azure national cloud (emulator flag off).
    pub fn is_national_cloud(&self) -> bool {
        !self.use_development_emulator
            && NATIONAL_CLOUD_SUFFIXES
                .iter()
                .any(|s| strip_suffix_ci(self.host(), s).is_some())
    }

    /// The namespace name the crate's URLs are built with
    /// (`https://{namespace}.servicebus.windows.net/…`). For an Azure endpoint it is the
    /// first label of the host; for any other endpoint the host with every character
    /// outside `[A-Za-z0-9-]` replaced by `-` (the request is redirected anyway).
    pub fn namespace(&self) -> String {
        if let Some(ns) = std::iter::once(AZURE_SUFFIX)
            .chain(NATIONAL_CLOUD_SUFFIXES.iter().copied())
            .find_map(|s| strip_suffix_ci(self.host(), s))
        {
            return ns.to_owned();
        }
        self.host()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("endpoint", &self.endpoint.as_str())
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .field("entity_path", &self.entity_path)
            .field("use_development_emulator", &self.use_development_emulator)
            .finish()
    }
}

fn required(v: Option<String>, part: &'static str) -> Result<String, ConnectionStringError> {
    v.filter(|v| !v.is_empty())
        .ok_or(ConnectionStringError::Missing { part })
}

/// `<ns>` of `<ns>.servicebus.windows.net` (case-insensitive), if the host is one.
fn azure_namespace(host: &str) -> Option<&str> {
    strip_suffix_ci(host, AZURE_SUFFIX)
}

/// `<ns>` of `<ns><suffix>` (case-insensitive, one label), if the host is one.
fn strip_suffix_ci<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    let cut = host.len().checked_sub(suffix.len())?;
    let (ns, tail) = (host.get(..cut)?, host.get(cut..)?);
    (tail.eq_ignore_ascii_case(suffix) && !ns.is_empty() && !ns.contains('.')).then_some(ns)
}

fn parse_endpoint(value: &str) -> Result<Url, ConnectionStringError> {
    let bad = |reason: &str| ConnectionStringError::BadEndpoint {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(value).map_err(|e| bad(&format!("{e} (expected sb://<host>[:port]/)")))?;
    if !matches!(url.scheme(), "sb" | "http" | "https") {
        return Err(bad(&format!(
            "scheme {:?} is not sb, http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not carry credentials"));
    }
    Ok(url)
}

/// Entity names: what Service Bus accepts for queue and topic paths, minus nothing clever.
pub(crate) fn check_entity(e: String) -> Result<String, ConnectionStringError> {
    let bad = |reason| ConnectionStringError::BadEntityPath {
        value: e.clone(),
        reason,
    };
    if e.is_empty() {
        return Err(bad("it is empty"));
    }
    if e.len() > 260 {
        return Err(bad("longer than 260 characters"));
    }
    if e.starts_with('/') || e.ends_with('/') {
        return Err(bad("it must not start or end with `/`"));
    }
    if !e
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '~'))
    {
        return Err(bad(
            "only letters, digits, `-`, `.`, `_`, `~` and `/` are allowed",
        ));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURE: &str = "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=abc+/def==";

    #[test]
    fn parses_the_azure_form() {
        let c = ConnectionString::parse(AZURE).unwrap();
        assert_eq!(c.host(), "contoso.servicebus.windows.net");
        assert_eq!(c.namespace(), "contoso");
        assert_eq!(c.key_name, "RootManageSharedAccessKey");
        assert_eq!(c.key, "abc+/def==");
        assert!(c.is_azure());
        assert_eq!(c.entity_path, None);
        assert!(!format!("{c:?}").contains("abc+/def=="));
    }

    #[test]
    fn parses_entity_path_emulator_and_case() {
        let c = ConnectionString::parse(
            "endpoint=sb://localhost:5300;sharedaccesskeyname=k;SHAREDACCESSKEY=s;EntityPath=orders/x;UseDevelopmentEmulator=TRUE;",
        )
        .unwrap();
        assert_eq!(c.entity_path.as_deref(), Some("orders/x"));
        assert!(c.use_development_emulator);
        assert!(!c.is_azure());
        assert_eq!(c.namespace(), "localhost");
        assert_eq!(c.endpoint.port(), Some(5300));
    }

    #[test]
    fn national_clouds_are_recognised() {
        let c = ConnectionString::parse(
            "Endpoint=sb://gov.servicebus.usgovcloudapi.net/;SharedAccessKeyName=k;SharedAccessKey=s",
        )
        .unwrap();
        assert!(c.is_national_cloud());
        assert!(!c.is_azure());
        assert_eq!(c.namespace(), "gov");
    }

    #[test]
    fn emulator_flag_makes_even_an_azure_host_local() {
        let c = ConnectionString::parse(&format!("{AZURE};UseDevelopmentEmulator=true")).unwrap();
        assert!(!c.is_azure());
    }

    #[test]
    fn names_what_is_wrong() {
        use ConnectionStringError as E;
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            (" ; ;", E::Empty),
            (
                "Endpoint=sb://a.servicebus.windows.net/;SharedAccessKeyName=k",
                E::Missing {
                    part: "SharedAccessKey",
                },
            ),
            (
                "Endpoint=sb://a.servicebus.windows.net/;SharedAccessKey=s",
                E::Missing {
                    part: "SharedAccessKeyName",
                },
            ),
            (
                "SharedAccessKeyName=k;SharedAccessKey=s",
                E::Missing { part: "Endpoint" },
            ),
            (
                "Endpoint=;SharedAccessKeyName=k;SharedAccessKey=s",
                E::Missing { part: "Endpoint" },
            ),
            (
                "Endpoint=sb://a/;SharedAccessKeyName=k;SharedAccessKey=s;UseDevelopmentEmulator=yes",
                E::BadFlag {
                    value: "yes".into(),
                },
            ),
            (
                "Endpoint=sb://a/;oops;SharedAccessKey=s",
                E::Malformed {
                    segment: "oops".into(),
                },
            ),
            (
                "Endpoint=sb://a/;Endpoint=sb://b/;SharedAccessKeyName=k;SharedAccessKey=s",
                E::Duplicate {
                    part: "Endpoint".into(),
                },
            ),
            (
                "Endpoint=sb://a/;SharedAccessSignature=SharedAccessSignature sr=x",
                E::Unsupported {
                    part: "SharedAccessSignature",
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                ConnectionString::parse(input).as_ref(),
                Err(want),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_endpoints_and_entities() {
        for ep in ["contoso", "ftp://a/", "sb://", "sb://u:p@a/"] {
            let err = ConnectionString::parse(&format!(
                "Endpoint={ep};SharedAccessKeyName=k;SharedAccessKey=s"
            ))
            .unwrap_err();
            assert!(
                matches!(err, ConnectionStringError::BadEndpoint { .. }),
                "{ep}: {err}"
            );
            assert!(err.to_string().contains("Endpoint"), "{err}");
        }
        let err = ConnectionString::parse(
            "Endpoint=sb://a/;SharedAccessKeyName=k;SharedAccessKey=s;EntityPath=a b",
        )
        .unwrap_err();
        assert!(matches!(err, ConnectionStringError::BadEntityPath { .. }));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "=",
            "==;==",
            "Endpoint==",
            ";;;=;",
            "\u{0}=\u{0}",
            "Endpoint=sb://[::1]:9/;SharedAccessKeyName=k;SharedAccessKey=s",
        ] {
            let _ = ConnectionString::parse(s).map(|c| (c.namespace(), c.is_azure()));
        }
    }
}
