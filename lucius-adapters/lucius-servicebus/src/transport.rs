//! The HTTP transport handed to `azure_messaging_servicebus`: the stock reqwest client for
//! Azure namespaces, or [`Redirect`], which sends the crate's
//! `https://{ns}.servicebus.windows.net/…` requests to another host and port over plain
//! HTTP (an emulator, a local fake).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::auth::Secret;
use azure_core::{headers, HttpClient, Request, Response};
use url::{form_urlencoded, Url};

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
    /// The redirect target of an endpoint that is not `*.servicebus.windows.net` (or has
    /// `UseDevelopmentEmulator=true`): its host and port, over plain HTTP, unless the
    /// emulator flag is off and the endpoint says `https://` or is in an Azure national
    /// cloud (`*.servicebus.usgovcloudapi.net`, …), which get HTTPS.
    pub fn of(conn: &ConnectionString) -> Option<Target> {
        if conn.is_azure() {
            return None;
        }
        let secure = conn.endpoint.scheme() == "https" || conn.is_national_cloud();
        let scheme = if secure && !conn.use_development_emulator {
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
/// and otherwise delegates: headers and body are untouched, except that with
/// [`Redirect::resigning`] the SharedAccessSignature is recomputed for the new URL.
#[derive(Debug)]
pub struct Redirect {
    target: Target,
    inner: Arc<dyn HttpClient>,
    signer: Option<Signer>,
}

/// Signs requests as the crate does, for another URL.
#[derive(Debug, Clone)]
struct Signer {
    key_name: String,
    /// The key, base64-encoded as `azure_core::hmac::hmac_sha256` expects.
    key: Secret,
}

impl Redirect {
    /// Redirects `inner`'s requests to `target`, signatures unchanged (they keep naming
    /// `https://{ns}.servicebus.windows.net/…`): for emulators and local endpoints.
    pub fn new(target: Target, inner: Arc<dyn HttpClient>) -> Redirect {
        Redirect {
            target,
            inner,
            signer: None,
        }
    }

    /// Redirects and re-signs each request for its new URL, keeping its expiry: for real
    /// Service Bus endpoints at other hosts (Azure national clouds), which check that the
    /// signed resource is the one requested.
    pub fn resigning(
        target: Target,
        inner: Arc<dyn HttpClient>,
        conn: &ConnectionString,
    ) -> Redirect {
        Redirect {
            target,
            inner,
            signer: Some(Signer {
                key_name: conn.key_name.clone(),
                key: Secret::new(azure_core::base64::encode(conn.key.as_bytes())),
            }),
        }
    }
}

impl Signer {
    /// `SharedAccessSignature sr=…&sig=…&se=…&skn=…` for `url`, valid until `se`.
    fn sign(&self, url: &Url, se: &str) -> azure_core::Result<String> {
        let sr: String = form_urlencoded::byte_serialize(url.as_str().as_bytes()).collect();
        let sig = azure_core::hmac::hmac_sha256(&format!("{sr}\n{se}"), &self.key)?;
        let sig: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        Ok(format!(
            "SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={}",
            self.key_name
        ))
    }
}

/// The `se` (expiry) of a SharedAccessSignature header.
fn expiry_of(auth: &str) -> Option<&str> {
    auth.strip_prefix("SharedAccessSignature ")?
        .split('&')
        .find_map(|p| p.strip_prefix("se="))
}

#[async_trait]
impl HttpClient for Redirect {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
        let mut moved = request.clone();
        *moved.url_mut() = self.target.rewrite(request.url())?;
        if let Some(signer) = &self.signer {
            let se = request
                .headers()
                .get_optional_str(&headers::AUTHORIZATION)
                .and_then(expiry_of)
                .map(str::to_owned);
            if let Some(se) = se {
                let auth = signer.sign(moved.url(), &se)?;
                moved.insert_header(headers::AUTHORIZATION, auth);
            }
        }
        tracing::trace!(from = %request.url(), to = %moved.url(), "redirecting Service Bus request");
        self.inner.execute_request(&moved).await
    }
}

/// The client for a connection: the stock reqwest one for `*.servicebus.windows.net`;
/// for any other endpoint wrapped in [`Redirect`], re-signing for national clouds.
pub fn client_for(conn: &ConnectionString) -> Arc<dyn HttpClient> {
    let inner = azure_core::new_http_client();
    match Target::of(conn) {
        None => inner,
        Some(t) if conn.is_national_cloud() => Arc::new(Redirect::resigning(t, inner, conn)),
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

    /// Records the request it is given and answers with an error.
    #[derive(Debug, Default)]
    struct Capture(std::sync::Mutex<Option<Request>>);

    #[async_trait]
    impl HttpClient for Capture {
        async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
            *self.0.lock().unwrap() = Some(request.clone());
            Err(azure_core::Error::message(
                azure_core::error::ErrorKind::Io,
                "captured",
            ))
        }
    }

    fn request_to(url: &str, auth: &str) -> Request {
        let mut r = Request::new(Url::parse(url).unwrap(), azure_core::Method::Post);
        r.insert_header(headers::AUTHORIZATION, auth.to_owned());
        r
    }

    #[tokio::test]
    async fn national_clouds_are_re_signed_for_their_own_host() {
        use base64::Engine as _;
        use hmac::Mac as _;
        let c = conn("sb://gov.servicebus.usgovcloudapi.net/");
        let capture = Arc::new(Capture::default());
        let redirect = Redirect::resigning(Target::of(&c).unwrap(), capture.clone(), &c);
        let old = "SharedAccessSignature sr=https%3A%2F%2Fgov.servicebus.windows.net%2Fq%2Fmessages&sig=x&se=1700000000&skn=k";
        let _ = redirect
            .execute_request(&request_to(
                "https://gov.servicebus.windows.net/q/messages",
                old,
            ))
            .await;
        let sent = capture.0.lock().unwrap().take().unwrap();
        assert_eq!(
            sent.url().as_str(),
            "https://gov.servicebus.usgovcloudapi.net/q/messages"
        );
        let auth = sent
            .headers()
            .get_optional_str(&headers::AUTHORIZATION)
            .unwrap()
            .to_owned();
        let sr = "https%3A%2F%2Fgov.servicebus.usgovcloudapi.net%2Fq%2Fmessages";
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"v").unwrap();
        mac.update(format!("{sr}\n1700000000").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        assert_eq!(
            auth,
            format!("SharedAccessSignature sr={sr}&sig={sig}&se=1700000000&skn=k")
        );
    }

    #[tokio::test]
    async fn local_endpoints_keep_the_crate_signature() {
        let c = conn("sb://127.0.0.1:5300/");
        let capture = Arc::new(Capture::default());
        let redirect = Redirect::new(Target::of(&c).unwrap(), capture.clone());
        let old = "SharedAccessSignature sr=a&sig=b&se=1&skn=k";
        let _ = redirect
            .execute_request(&request_to(
                "https://x.servicebus.windows.net/q/messages",
                old,
            ))
            .await;
        let sent = capture.0.lock().unwrap().take().unwrap();
        assert_eq!(
            sent.headers().get_optional_str(&headers::AUTHORIZATION),
            Some(old)
        );
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
        let t = Target::of(&conn("sb://ns.servicebus.chinacloudapi.cn/")).unwrap();
        assert_eq!(
            t.rewrite(&url).unwrap().as_str(),
            "https://ns.servicebus.chinacloudapi.cn/q/messages/head?timeout=5"
        );
        let t = Target::of(&conn("sb://[::1]:9000/")).unwrap();
        assert_eq!(
            t.rewrite(&url).unwrap().as_str(),
            "http://[::1]:9000/q/messages/head?timeout=5"
        );
    }
}
