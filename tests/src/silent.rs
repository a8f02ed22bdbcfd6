//! A store that accepts connections and never answers: the silent-store case of the
//! hardening tests (every wait must be bounded) and of the daemon's retries.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;

/// A server that accepts connections, reads whatever comes, and never answers.
pub struct SilentServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    pub fn start() -> Result<SilentServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(true);
                            held.push(stream);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                    // Drain what clients send, so they are never blocked by a full
                    // buffer: only the answer is missing.
                    let mut buf = [0u8; 64 * 1024];
                    for s in &mut held {
                        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                    }
                }
            }
        });
        Ok(SilentServer {
            port,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
