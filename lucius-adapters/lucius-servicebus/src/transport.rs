//! The HTTP transport handed to `azure_messaging_servicebus`: the stock reqwest client for
//! Azure namespaces, or [`Redirect`], which sends the crate's
//! `https://{ns}.servicebus.windows.net/…` requests to another host and port over plain
//! HTTP (an emulator, a local fake).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::{HttpClient, Request, Response};
use url::Url;

use crate::connection::ConnectionString;

/// Where requests actually go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: String,
    /// The host.
    pub host: String,
    /// The port, if not the scheme's default.
    pub port: Option<u16>,
}

impl Target {
    /// The redirect target of a non-Azure endpoint: its host and port, over plain HTTP
    /// unless the endpoint says `https://` (and the emulator flag is off).
    pub fn of(conn: &ConnectionString) -> Option<Target> {
        if conn.is_azure() {
            return None;
        }
        let scheme = if conn.endpoint.scheme() == "https" && !conn.use_development_emulator {
            "https"
        } else {
            "http"
        };
        Some(Target {
            scheme: scheme.to_owned(),
            host: conn.host().to_owned(),
            port: conn.endpoint.port(),
        })
    }

    /// `url` moved to this target (path and query kept).
    pub fn rewrite(&self, url: &Url) -> Result<Url, azure_core::Error> {
        let text = format!(
            "{}://{}{}{}",
            self.scheme,
            self.host_for_url(),
            self.port.map(|p| format!(":{p}")).unwrap_or_default(),
            &url[url::Position::BeforePath..]
        );
        Url::parse(&text).map_err(|e| {
            azure_core::Error::full(
                azure_core::error::ErrorKind::DataConversion,
                e,
                format!("cannot redirect {url} to {text}"),
            )
        })
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// An [`HttpClient`] that rewrites scheme, host and port of every request to a [`Target`]
/// and otherwise delegates (headers, including the signature, and body are untouched).
#[derive(Debug)]
pub struct Redirect {
    target: Target,
    inner: Arc<dyn HttpClient>,
}

impl Redirect {
    /// Redirects `inner`'s requests to `target`.
    pub fn new(target: Target, inner: Arc<dyn HttpClient>) -> Redirect {
        Redirect { target, inner }
    }
}

#[async_trait]
impl HttpClient for Redirect {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
        let mut moved = request.clone();
        *moved.url_mut() = self.target.rewrite(request.url())?;
        tracing::trace!(from = %request.url(), to = %moved.url(), "redirecting Service Bus request");
        self.inner.execute_request(&moved).await
    }
}

/// The client for a connection: the stock reqwest one for Azure, wrapped in [`Redirect`]
/// for any other endpoint.
pub fn client_for(conn: &ConnectionString) -> Arc<dyn HttpClient> {
    let inner = azure_core::new_http_client();
    match Target::of(conn) {
        None => inner,
        Some(t) => Arc::new(Redirect::new(t, inner)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(s: &str) -> ConnectionString {
        ConnectionString::parse(&format!(
            "Endpoint={s};SharedAccessKeyName=k;SharedAccessKey=v"
        ))
        .unwrap()
    }

    #[test]
    fn azure_is_not_redirected() {
        assert_eq!(Target::of(&conn("sb://ns.servicebus.windows.net/")), None);
    }

    #[test]
    fn others_go_to_their_host_and_port_over_http() {
        let t = Target::of(&conn("sb://127.0.0.1:5300/")).unwrap();
        let url = Url::parse("https://x.servicebus.windows.net/q/messages/head?timeout=5").unwrap();
        assert_eq!(
            t.rewrite(&url).unwrap().as_str(),
            "http://127.0.0.1:5300/q/messages/head?timeout=5"
        );
        let t = Target::of(&conn("sb://localhost")).unwrap();
        assert_eq!(
            t.rewrite(&url).unwrap().as_str(),
            "http://localhost/q/messages/head?timeout=5"
        );
        let t = Target::of(&conn("https://bus.internal:8443/")).unwrap();
        assert_eq!(
            t.rewrite(&url).unwrap().as_str(),
            "https://bus.internal:8443/q/messages/head?timeout=5"
        );
        let t = Target::of(&conn("sb://[::1]:9000/")).unwrap();
        assert_eq!(
            t.rewrite(&url).unwrap().as_str(),
            "http://[::1]:9000/q/messages/head?timeout=5"
        );
    }
}
