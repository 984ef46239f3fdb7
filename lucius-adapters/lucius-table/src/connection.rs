//! Azure Storage connection strings: `UseDevelopmentStorage=true` (Azurite) and
//! `DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…;TableEndpoint=…`.

use azure_core::auth::Secret;
use azure_storage::{CloudLocation, StorageCredentials};

/// Why a connection string was refused. The message names what is wrong, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad table connection string: {0}")]
pub struct ConnectionStringError(pub String);

/// Where the table service is and how to sign requests to it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) location: CloudLocation,
    pub(crate) credentials: StorageCredentials,
    /// For messages: the account and endpoint, without secrets.
    pub(crate) describe: String,
}

/// Parses an Azure Storage connection string.
pub(crate) fn parse(conn: &str) -> Result<Endpoint, ConnectionStringError> {
    let err = |m: String| ConnectionStringError(m);
    let mut dev = false;
    let mut proxy: Option<&str> = None;
    let mut protocol: Option<&str> = None;
    let mut account: Option<&str> = None;
    let mut key: Option<&str> = None;
    let mut sas: Option<&str> = None;
    let mut table_endpoint: Option<&str> = None;
    let mut suffix: Option<&str> = None;
    if conn.trim().is_empty() {
        return Err(err("it is empty (expected UseDevelopmentStorage=true or \
             DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…)"
            .into()));
    }
    for part in conn.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            let name: String = part.chars().take(40).collect();
            return Err(err(format!("expected key=value, found {name:?}")));
        };
        let (k, v) = (k.trim(), v.trim());
        if v.is_empty() {
            return Err(err(format!("{k} has no value")));
        }
        match k {
            "UseDevelopmentStorage" => match v.to_ascii_lowercase().as_str() {
                "true" => dev = true,
                "false" => dev = false,
                _ => {
                    return Err(err(format!(
                        "UseDevelopmentStorage must be true or false, found {v:?}"
                    )))
                }
            },
            "DevelopmentStorageProxyUri" => proxy = Some(v),
            "DefaultEndpointsProtocol" => match v {
                "http" | "https" => protocol = Some(v),
                _ => {
                    return Err(err(format!(
                        "DefaultEndpointsProtocol must be http or https, found {v:?}"
                    )))
                }
            },
            "AccountName" => account = Some(v),
            "AccountKey" => key = Some(v),
            "SharedAccessSignature" => sas = Some(v),
            "TableEndpoint" => table_endpoint = Some(v),
            "EndpointSuffix" => suffix = Some(v),
            // Endpoints of other services are legal in a storage connection string.
            "BlobEndpoint"
            | "QueueEndpoint"
            | "FileEndpoint"
            | "BlobSecondaryEndpoint"
            | "QueueSecondaryEndpoint"
            | "FileSecondaryEndpoint"
            | "TableSecondaryEndpoint" => {}
            other => return Err(err(format!("unknown key {other:?}"))),
        }
    }
    if dev {
        let (address, port) = match proxy {
            None => ("127.0.0.1".to_owned(), 10002),
            Some(uri) => {
                let rest = uri
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .trim_end_matches('/');
                let (host, port) = rest.split_once(':').unwrap_or((rest, "10002"));
                let port = port.parse().map_err(|_| {
                    err(format!(
                        "DevelopmentStorageProxyUri has a bad port: {uri:?}"
                    ))
                })?;
                (host.to_owned(), port)
            }
        };
        let describe = format!("Azurite at http://{address}:{port}/devstoreaccount1");
        return Ok(Endpoint {
            location: CloudLocation::Emulator { address, port },
            credentials: StorageCredentials::emulator(),
            describe,
        });
    }
    let account = account.ok_or_else(|| {
        err("AccountName is missing (or use UseDevelopmentStorage=true for Azurite)".into())
    })?;
    let credentials = match (key, sas) {
        (Some(k), _) => {
            if azure_core::base64::decode(k).is_err() {
                return Err(err(format!(
                    "AccountKey of account {account} is not valid base64"
                )));
            }
            StorageCredentials::access_key(account.to_owned(), Secret::new(k.to_owned()))
        }
        (None, Some(s)) => StorageCredentials::sas_token(s)
            .map_err(|e| err(format!("SharedAccessSignature is not valid: {e}")))?,
        (None, None) => {
            return Err(err(format!(
                "AccountKey (or SharedAccessSignature) is missing for account {account}"
            )))
        }
    };
    let location = match table_endpoint {
        Some(uri) => {
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                return Err(err(format!(
                    "TableEndpoint must be an http(s) URL, found {uri:?}"
                )));
            }
            CloudLocation::Custom {
                account: account.to_owned(),
                uri: uri.trim_end_matches('/').to_owned(),
            }
        }
        None => {
            let protocol = protocol.unwrap_or("https");
            let suffix = suffix.unwrap_or("core.windows.net");
            CloudLocation::Custom {
                account: account.to_owned(),
                uri: format!("{protocol}://{account}.table.{suffix}"),
            }
        }
    };
    let describe = match &location {
        CloudLocation::Custom { uri, .. } => format!("account {account} at {uri}"),
        _ => format!("account {account}"),
    };
    Ok(Endpoint {
        location,
        credentials,
        describe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage_is_azurite() {
        let e = parse("UseDevelopmentStorage=true").unwrap();
        assert!(
            matches!(e.location, CloudLocation::Emulator { ref address, port: 10002 } if address == "127.0.0.1")
        );
        let e = parse("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://10.0.0.5:1234")
            .unwrap();
        assert!(matches!(
            e.location,
            CloudLocation::Emulator { port: 1234, .. }
        ));
    }

    #[test]
    fn account_strings_parse() {
        let e = parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
             AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;\
             TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;",
        )
        .unwrap();
        assert!(
            matches!(e.location, CloudLocation::Custom { ref uri, .. } if uri == "http://127.0.0.1:10002/devstoreaccount1")
        );
        let e = parse("AccountName=acct;AccountKey=a2V5").unwrap();
        assert!(e.describe.contains("https://acct.table.core.windows.net"));
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        for (s, says) in [
            ("", "empty"),
            ("AccountName=a", "AccountKey"),
            ("AccountKey=a2V5", "AccountName"),
            ("AccountName=a;AccountKey=not base64!", "base64"),
            ("UseDevelopmentStorage=yes", "true or false"),
            ("Foo=bar", "unknown key"),
            ("AccountName", "key=value"),
            (
                "AccountName=a;AccountKey=a2V5;TableEndpoint=ftp://x",
                "http(s)",
            ),
            ("DefaultEndpointsProtocol=ftp", "http or https"),
        ] {
            let e = parse(s).expect_err(s).to_string();
            assert!(e.contains(says), "{s:?}: {e}");
        }
        // The key never appears in messages.
        let e = parse("AccountName=a;AccountKey=c2VjcmV0;TableEndpoint=x").unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"));
    }
}
