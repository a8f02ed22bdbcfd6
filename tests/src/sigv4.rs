//! Just enough AWS Signature Version 4 to send a body-less request (create or
//! check a bucket), or a plain PUT with an unsigned payload (the benchmark's ingest
//! ceiling), to a local S3-compatible server, without an S3 client.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const REGION: &str = "us-east-1";

/// Sends `method path` (path-style, no query, no body) to 127.0.0.1:`port`, signed
/// with the given keys, and returns the HTTP status code.
pub(crate) fn send(port: u16, method: &str, path: &str, access: &str, secret: &str) -> Result<u16> {
    send_with_body(port, method, path, access, secret, None)
}

/// Like [`send`], with a body sent as `UNSIGNED-PAYLOAD` (no hash of it is computed:
/// the benchmark's ceiling wants the server's cost, not the client's).
pub(crate) fn send_with_body(
    port: u16,
    method: &str,
    path: &str,
    access: &str,
    secret: &str,
    body: Option<&[u8]>,
) -> Result<u16> {
    Ok(exchange(port, method, path, access, secret, body)?.0)
}

/// One signed request; the answer's status and body (a chunked body decoded).
pub(crate) fn exchange(
    port: u16,
    method: &str,
    path: &str,
    access: &str,
    secret: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>)> {
    let host = format!("127.0.0.1:{port}");
    let (amz_date, date) = timestamps(SystemTime::now());
    let empty_hash = match body {
        Some(_) => "UNSIGNED-PAYLOAD".to_owned(),
        None => hex::encode(Sha256::digest(b"")),
    };
    let length = body.map_or(0, <[u8]>::len);
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical_request = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{empty_hash}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{empty_hash}"
    );
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [REGION, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));

    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nx-amz-content-sha256: {empty_hash}\r\n\
         x-amz-date: {amz_date}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={access}/{scope}, \
         SignedHeaders={signed_headers}, Signature={signature}\r\nContent-Length: {length}\r\n\
         Connection: close\r\n\r\n"
    );
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body)?;
    }
    let mut response = Vec::new();
    // The server closes the connection after the response (Connection: close); a
    // HEAD response has no body, so reading the status line is all that matters.
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status in the answer from {host}: {text:?}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |at| at + 4);
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let mut rest = &response[split..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok((status, rest.to_vec()));
    }
    let mut body = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("a bad chunk size {size_text:?} from {host}"))?;
        rest = &rest[end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    Ok((status, body))
}

/// HMAC-SHA-256 (RFC 2104), written out because it is eight lines.
pub(crate) fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block_key.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = block_key.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_pad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// `(YYYYMMDDTHHMMSSZ, YYYYMMDD)` in UTC.
fn timestamps(now: SystemTime) -> (String, String) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let date = format!("{y:04}{m:02}{d:02}");
    let time = format!("{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60);
    (format!("{date}T{time}Z"), date)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (the era-based method
/// described by Howard Hinnant in "chrono-Compatible Low-Level Date Algorithms").
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn dates_convert_across_leap_years_and_eras() {
        for (days, want) in [
            (0, (1970, 1, 1)),
            (11_016, (2000, 2, 29)),
            (19_782, (2024, 2, 29)),
            (20_416, (2025, 11, 24)),
            (-1, (1969, 12, 31)),
        ] {
            assert_eq!(civil_from_days(days), want, "day {days}");
        }
        let (amz, date) = timestamps(UNIX_EPOCH + Duration::from_secs(86_400 + 3_723));
        assert_eq!(
            (amz.as_str(), date.as_str()),
            ("19700102T010203Z", "19700102")
        );
    }
}
