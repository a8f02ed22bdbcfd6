//! A stand-in for Azure AD's token endpoint on 127.0.0.1, speaking the client-assertion
//! flow that AKS workload identity uses: `POST /<tenant>/oauth2/v2.0/token` with
//! `grant_type=client_credentials`, `client_assertion_type=…jwt-bearer`,
//! `client_assertion=<the projected service-account token>`, `client_id` and `scope`.
//!
//! Like Azure AD it checks every field, and it accepts the assertion only while it is
//! the current content of the federated token file (as a rotated-out service-account
//! token stops being accepted), so a client that cached the file's content fails after
//! a rotation. It answers with a JWT access token that Azurite's `--oauth basic` mode
//! accepts (issuer `https://sts.windows.net/<tenant>/`, audience
//! `https://storage.azure.com`, valid from a minute ago for `lifetime`), and records the
//! assertions it was sent.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::sigv4::hmac;
use crate::stub::{LoopbackServer, read_request};
use crate::util::random_token;

/// What the stub expects and hands out.
#[derive(Debug, Clone)]
pub struct AadOptions {
    pub tenant_id: String,
    pub client_id: String,
    /// The federated token file; its content at request time is the one valid assertion.
    pub token_file: PathBuf,
    /// How long the access tokens it issues are valid (`expires_in`).
    pub lifetime: Duration,
}

/// The stub; stopped when dropped.
pub struct AadStub {
    server: LoopbackServer,
    assertions: Arc<Mutex<Vec<String>>>,
}

impl AadStub {
    pub fn start(options: AadOptions) -> Result<AadStub> {
        let assertions = Arc::new(Mutex::new(Vec::new()));
        let seen = assertions.clone();
        let server = LoopbackServer::start(move |stream| {
            let _ = serve(stream, &options, &seen);
        })?;
        Ok(AadStub { server, assertions })
    }

    /// What `AZURE_AUTHORITY_HOST` should be.
    pub fn authority_host(&self) -> String {
        format!("http://127.0.0.1:{}/", self.server.port())
    }

    /// The assertions received so far, accepted or not, oldest first.
    pub fn assertions(&self) -> Vec<String> {
        self.assertions.lock().expect("assertions lock").clone()
    }
}

fn serve(stream: TcpStream, options: &AadOptions, seen: &Mutex<Vec<String>>) -> Result<()> {
    let request = read_request(&stream)?;
    let content_type = request.header("content-type").unwrap_or("");
    let form = parse_form(&String::from_utf8_lossy(&request.body));
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if !field("client_assertion").is_empty() {
        seen.lock()
            .expect("assertions lock")
            .push(field("client_assertion").to_owned());
    }
    let current = std::fs::read_to_string(&options.token_file).unwrap_or_default();
    let path = format!("/{}/oauth2/v2.0/token", options.tenant_id);
    let problem = if !request.line.starts_with(&format!("POST {path} ")) {
        Some((
            404,
            "invalid_request",
            format!("AADSTS90002: no token endpoint at {}", request.line),
        ))
    } else if !content_type.starts_with("application/x-www-form-urlencoded") {
        Some((
            400,
            "invalid_request",
            format!("AADSTS900144: content type {content_type:?}"),
        ))
    } else if field("grant_type") != "client_credentials" {
        Some((
            400,
            "unsupported_grant_type",
            "AADSTS70003: grant_type".to_owned(),
        ))
    } else if field("client_assertion_type")
        != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    {
        Some((
            400,
            "invalid_request",
            "AADSTS50027: client_assertion_type".to_owned(),
        ))
    } else if field("client_id") != options.client_id {
        Some((
            400,
            "unauthorized_client",
            format!(
                "AADSTS700016: Application with identifier '{}' was not found",
                field("client_id")
            ),
        ))
    } else if field("scope") != "https://storage.azure.com/.default" {
        Some((
            400,
            "invalid_scope",
            format!("AADSTS70011: scope {:?}", field("scope")),
        ))
    } else if current.trim().is_empty() || field("client_assertion") != current.trim() {
        Some((
            400,
            "invalid_client",
            "AADSTS700024: Client assertion is not within its valid time range".to_owned(),
        ))
    } else {
        None
    };
    let (status, body) = match problem {
        Some((status, error, description)) => (
            status,
            format!(r#"{{"error":"{error}","error_description":"{description}"}}"#),
        ),
        None => {
            let lifetime = options.lifetime.as_secs();
            (
                200,
                format!(
                    r#"{{"token_type":"Bearer","expires_in":{lifetime},"ext_expires_in":{lifetime},"access_token":"{}"}}"#,
                    access_token(&options.tenant_id, &options.client_id, options.lifetime)
                ),
            )
        }
    };
    let reason = if status == 200 { "OK" } else { "Bad Request" };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// A JWT shaped like Azure AD's storage tokens. Azurite does not check signatures; it is
/// signed with a throwaway key all the same, so it is a well-formed HS256 token.
fn access_token(tenant: &str, client_id: &str, lifetime: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"aud":"https://storage.azure.com","iss":"https://sts.windows.net/{tenant}/","iat":{iat},"nbf":{iat},"exp":{exp},"appid":"{client_id}","oid":"{client_id}","sub":"{client_id}","tid":"{tenant}","ver":"1.0"}}"#,
        iat = now.saturating_sub(60),
        exp = now + lifetime.as_secs(),
    ));
    let signing_input = format!("{header}.{claims}");
    let signature =
        URL_SAFE_NO_PAD.encode(hmac(random_token(32).as_bytes(), signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// `application/x-www-form-urlencoded` pairs.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_tokens_have_three_parts() {
        assert_eq!(
            parse_form("scope=https%3A%2F%2Fstorage.azure.com%2F.default&a=b+c&e="),
            [
                (
                    "scope".to_owned(),
                    "https://storage.azure.com/.default".to_owned()
                ),
                ("a".to_owned(), "b c".to_owned()),
                ("e".to_owned(), String::new()),
            ]
        );
        let token = access_token("t", "c", Duration::from_secs(60));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert!(
            claims.contains(r#""iss":"https://sts.windows.net/t/""#),
            "{claims}"
        );
    }
}
