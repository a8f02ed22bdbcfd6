//! A stand-in for the Kubernetes API on 127.0.0.1, speaking its real JSON over plain
//! HTTP/1.1: GET of Clusters, ObjectStores, Secrets and Backups in one namespace, LIST
//! and DELETE of Backups, field-selected WATCH (newline-delimited events, chunked, as
//! the API server streams them), GET and PUT of an ObjectStore's status (with
//! resourceVersion conflicts, 409), and 403 for any object it is told to deny. Every request is recorded with whether it carried
//! the bearer token. Stopped when dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use crate::stub::{LoopbackServer, Request, read_request};

/// The kinds the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeKind {
    Cluster,
    ObjectStore,
    Secret,
    Backup,
}

impl KubeKind {
    fn collection(self, namespace: &str) -> String {
        match self {
            KubeKind::Cluster => {
                format!("/apis/postgresql.cnpg.io/v1/namespaces/{namespace}/clusters")
            }
            KubeKind::ObjectStore => {
                format!("/apis/barmancloud.cnpg.io/v1/namespaces/{namespace}/objectstores")
            }
            KubeKind::Secret => format!("/api/v1/namespaces/{namespace}/secrets"),
            KubeKind::Backup => {
                format!("/apis/postgresql.cnpg.io/v1/namespaces/{namespace}/backups")
            }
        }
    }

    /// The kind a collection path is of, and its list's `kind`.
    fn of_collection(path: &str, namespace: &str) -> Option<(KubeKind, &'static str)> {
        [
            (KubeKind::Cluster, "ClusterList"),
            (KubeKind::ObjectStore, "ObjectStoreList"),
            (KubeKind::Secret, "SecretList"),
            (KubeKind::Backup, "BackupList"),
        ]
        .into_iter()
        .find(|(kind, _)| kind.collection(namespace) == path)
    }
}

/// One request as seen: `GET /api/v1/...?...`, and whether it had the bearer token.
#[derive(Debug, Clone)]
pub struct KubeRequest {
    pub line: String,
    pub authorized: bool,
}

#[derive(Default)]
struct State {
    /// Object path → object.
    objects: BTreeMap<String, Value>,
    /// The last resourceVersion given.
    version: u64,
    /// (version, object path, event type, object).
    events: Vec<(u64, String, &'static str, Value)>,
    /// Object paths answered 403.
    denied: BTreeSet<String>,
    requests: Vec<KubeRequest>,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    namespace: String,
    token: String,
}

/// The stand-in; stopped when dropped.
pub struct KubeApi {
    shared: Arc<Shared>,
    server: Option<LoopbackServer>,
}

impl KubeApi {
    /// Serves `namespace`; requests must carry `Authorization: Bearer <token>` (401
    /// otherwise).
    pub fn start(namespace: &str, token: &str) -> Result<KubeApi> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            namespace: namespace.to_owned(),
            token: token.to_owned(),
        });
        let serving = shared.clone();
        let server = LoopbackServer::start_concurrent(move |stream| {
            if let Ok(request) = read_request(&stream) {
                let _ = serve(&serving, stream, &request);
            }
        })?;
        Ok(KubeApi {
            shared,
            server: Some(server),
        })
    }

    /// The namespace served.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.server.as_ref().expect("serving").port()
        )
    }

    /// Writes a kubeconfig for this server, its namespace and token into `dir`.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
                 users:\n- name: sidecar\n  user:\n    token: {}\ncontexts:\n- name: standin\n  context:\n\
                 \x20   cluster: standin\n    user: sidecar\n    namespace: {}\ncurrent-context: standin\n",
                self.url(),
                self.shared.token,
                self.shared.namespace
            ),
        )?;
        Ok(path)
    }

    fn path(&self, kind: KubeKind, name: &str) -> String {
        format!("{}/{name}", kind.collection(&self.shared.namespace))
    }

    /// Creates or replaces an object (its metadata gets the name, namespace, a uid and
    /// the next resourceVersion; a replaced object keeps its status).
    pub fn put(&self, kind: KubeKind, name: &str, mut object: Value) {
        let path = self.path(kind, name);
        let mut state = self.shared.state.lock().expect("state");
        state.version += 1;
        let version = state.version;
        let previous = state.objects.get(&path).cloned();
        let meta = object
            .as_object_mut()
            .expect("an object")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        meta["name"] = json!(name);
        meta["namespace"] = json!(self.shared.namespace);
        meta["uid"] = json!(format!("uid-{name}"));
        meta["resourceVersion"] = json!(version.to_string());
        if let Some(status) = previous.as_ref().and_then(|p| p.get("status")) {
            object["status"] = status.clone();
        }
        let kind_of = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.objects.insert(path.clone(), object.clone());
        state.events.push((version, path, kind_of, object));
        self.shared.changed.notify_all();
    }

    /// A Secret with these keys and values (`data`, base64 as the API serves it).
    pub fn put_secret(&self, name: &str, entries: &[(&str, &str)]) {
        use base64::Engine;
        let data: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        self.put(
            KubeKind::Secret,
            name,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data}),
        );
    }

    /// Deletes an object (a 404 from then on).
    pub fn delete(&self, kind: KubeKind, name: &str) {
        let path = self.path(kind, name);
        let mut state = self.shared.state.lock().expect("state");
        if let Some(object) = state.objects.remove(&path) {
            state.version += 1;
            let version = state.version;
            state.events.push((version, path, "DELETED", object));
            self.shared.changed.notify_all();
        }
    }

    /// Answers 403 for the object (every verb) while `denied`.
    pub fn deny(&self, kind: KubeKind, name: &str, denied: bool) {
        let path = self.path(kind, name);
        let mut state = self.shared.state.lock().expect("state");
        if denied {
            state.denied.insert(path);
        } else {
            state.denied.remove(&path);
        }
    }

    /// The object as stored now.
    pub fn get(&self, kind: KubeKind, name: &str) -> Option<Value> {
        let path = self.path(kind, name);
        self.shared
            .state
            .lock()
            .expect("state")
            .objects
            .get(&path)
            .cloned()
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<KubeRequest> {
        self.shared.state.lock().expect("state").requests.clone()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.shared.state.lock().expect("state").stopping = true;
        self.shared.changed.notify_all();
        self.server.take();
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn reply(mut stream: TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        stream,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        match code {
            200 => "OK",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            409 => "Conflict",
            _ => "Error",
        },
        body.len()
    )
}

/// The group and version of a collection path (`v1` for the core group).
fn api_version(path: &str) -> String {
    match path.strip_prefix("/apis/") {
        Some(rest) => rest.split('/').take(2).collect::<Vec<_>>().join("/"),
        None => "v1".to_owned(),
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn serve(shared: &Shared, stream: TcpStream, request: &Request) -> std::io::Result<()> {
    let authorized = request.header("authorization") == Some(&format!("Bearer {}", shared.token));
    shared
        .state
        .lock()
        .expect("state")
        .requests
        .push(KubeRequest {
            line: request.line.clone(),
            authorized,
        });
    if !authorized {
        return reply(stream, 401, &status(401, "Unauthorized", "Unauthorized"));
    }
    let (path, query) = request
        .path()
        .split_once('?')
        .unwrap_or((request.path(), ""));
    let watch = matches!(query_param(query, "watch"), Some("true" | "1"));
    if watch {
        // A field-selected watch of one object: `fieldSelector=metadata.name%3D<name>`.
        let name = query_param(query, "fieldSelector")
            .map(|s| s.replace("%3D", "=").replace("%3d", "="))
            .and_then(|s| s.strip_prefix("metadata.name=").map(str::to_owned));
        let Some(name) = name else {
            return reply(
                stream,
                403,
                &status(403, "Forbidden", "only field-selected watches are allowed"),
            );
        };
        let object_path = format!("{path}/{name}");
        if shared
            .state
            .lock()
            .expect("state")
            .denied
            .contains(&object_path)
        {
            return reply(stream, 403, &status(403, "Forbidden", "watch is forbidden"));
        }
        let since: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let seconds: u64 = query_param(query, "timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        return stream_events(
            shared,
            stream,
            &object_path,
            since,
            Duration::from_secs(seconds),
        );
    }
    let (object_path, subresource) = match path.strip_suffix("/status") {
        Some(object) => (object.to_owned(), true),
        None => (path.to_owned(), false),
    };
    let mut state = shared.state.lock().expect("state");
    if let Some((_, list_kind)) = KubeKind::of_collection(&object_path, &shared.namespace)
        && request.method() == "GET"
        && !state.denied.contains(&object_path)
    {
        // A LIST of the collection (unselected: a Role granting `list` on the kind).
        let prefix = format!("{object_path}/");
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(path, _)| path.strip_prefix(&prefix).is_some_and(|n| !n.contains('/')))
            .map(|(_, object)| object.clone())
            .collect();
        let version = state.version;
        drop(state);
        return reply(
            stream,
            200,
            &json!({"kind": list_kind, "apiVersion": api_version(&object_path),
                    "metadata": {"resourceVersion": version.to_string()}, "items": items}),
        );
    }
    if state.denied.contains(&object_path) {
        drop(state);
        return reply(
            stream,
            403,
            &status(
                403,
                "Forbidden",
                &format!("{} {object_path} is forbidden", request.method()),
            ),
        );
    }
    let Some(current) = state.objects.get(&object_path).cloned() else {
        drop(state);
        return reply(
            stream,
            404,
            &status(404, "NotFound", &format!("{object_path} not found")),
        );
    };
    match (request.method(), subresource) {
        ("GET", _) => {
            drop(state);
            reply(stream, 200, &current)
        }
        ("DELETE", false) => {
            state.objects.remove(&object_path);
            state.version += 1;
            let version = state.version;
            state
                .events
                .push((version, object_path, "DELETED", current.clone()));
            shared.changed.notify_all();
            drop(state);
            reply(stream, 200, &current)
        }
        ("PUT", true) => {
            let Ok(sent) = serde_json::from_slice::<Value>(&request.body) else {
                drop(state);
                return reply(stream, 400, &status(400, "BadRequest", "not JSON"));
            };
            if sent["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                drop(state);
                return reply(
                    stream,
                    409,
                    &status(409, "Conflict", "the object has been modified"),
                );
            }
            let mut updated = current;
            updated["status"] = sent.get("status").cloned().unwrap_or(Value::Null);
            state.version += 1;
            let version = state.version;
            updated["metadata"]["resourceVersion"] = json!(version.to_string());
            state.objects.insert(object_path.clone(), updated.clone());
            state
                .events
                .push((version, object_path, "MODIFIED", updated.clone()));
            shared.changed.notify_all();
            drop(state);
            reply(stream, 200, &updated)
        }
        _ => {
            drop(state);
            reply(
                stream,
                405,
                &status(405, "MethodNotAllowed", "not served by the stand-in"),
            )
        }
    }
}

/// Streams the object's events after `since` until `timeout`, chunked, one JSON event
/// per line, as the API server does.
fn stream_events(
    shared: &Shared,
    mut stream: TcpStream,
    object_path: &str,
    mut since: u64,
    timeout: Duration,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    stream.flush()?;
    let deadline = Instant::now() + timeout;
    let mut state = shared.state.lock().expect("state");
    loop {
        let pending: Vec<(u64, &'static str, Value)> = state
            .events
            .iter()
            .filter(|(version, path, _, _)| *version > since && path == object_path)
            .map(|(version, _, kind, object)| (*version, *kind, object.clone()))
            .collect();
        drop(state);
        for (version, kind, object) in pending {
            let line = format!("{}\n", json!({"type": kind, "object": object}));
            write!(stream, "{:x}\r\n{line}\r\n", line.len())?;
            stream.flush()?;
            since = version;
        }
        state = shared.state.lock().expect("state");
        let now = Instant::now();
        if state.stopping || now >= deadline {
            break;
        }
        state = shared
            .changed
            .wait_timeout(state, (deadline - now).min(Duration::from_millis(500)))
            .expect("state")
            .0;
    }
    drop(state);
    write!(stream, "0\r\n\r\n")?;
    stream.flush()
}
