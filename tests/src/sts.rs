//! A stand-in for AWS STS on 127.0.0.1 that answers `AssumeRoleWithWebIdentity` (the
//! call behind IRSA) with fixed credentials, and records what it was sent.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::stub::{LoopbackServer, read_request};

/// The stub server; stopped when dropped.
pub struct StsStub {
    server: LoopbackServer,
    requests: Arc<Mutex<Vec<String>>>,
}

impl StsStub {
    /// Answers every request with `access_key`, `secret_key` and `session_token` as the
    /// assumed role's credentials, valid for an hour.
    pub fn start(access_key: &str, secret_key: &str, session_token: &str) -> Result<StsStub> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let body = response_body(access_key, secret_key, session_token);
        let seen = requests.clone();
        let server = LoopbackServer::start(move |stream| {
            if let Ok(request) = serve(stream, &body) {
                seen.lock().expect("requests lock").push(request);
            }
        })?;
        Ok(StsStub { server, requests })
    }

    /// The endpoint to give the SDK (`AWS_ENDPOINT_URL_STS`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// The bodies of the requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// Reads one HTTP request and answers it; returns the request body.
fn serve(stream: TcpStream, body: &str) -> std::io::Result<String> {
    let request = read_request(&stream)?;
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(String::from_utf8_lossy(&request.body).into_owned())
}

fn response_body(access_key: &str, secret_key: &str, session_token: &str) -> String {
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:db:walship</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/walship/walship-session</Arn>
      <AssumedRoleId>AROA0000000000EXAMPLE:walship-session</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{access_key}</AccessKeyId>
      <SecretAccessKey>{secret_key}</SecretAccessKey>
      <SessionToken>{session_token}</SessionToken>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
    </Credentials>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
    )
}
