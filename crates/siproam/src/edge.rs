//! The registrar and proxy of `siproam-edge` as an [`Application`] of a
//! running endpoint: the sans-IO [`Dispatcher`] behind a lock, so the
//! owner can look bindings up from another task, and a key from the OS's
//! secure generator. The sans-IO types are re-exported here, so one
//! dependency on `siproam` is enough to run a registrar. [`EdgeApp`] runs
//! the RFC 5626 [`EdgeProxy`] the same way; [`load_or_create_flow_key`]
//! gives it a key that survives restarts.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub use siproam_edge::*;

use tokio::sync::mpsc;

use crate::core::{CallId, Endpoint, Event};
use crate::location::{queue_ops, StoreDone};
use crate::{AppCommand, Application, CommandError};

/// Runs a [`Registrar`] and a [`Proxy`] for the AoRs it holds inside an
/// endpoint task; requests for the element itself get the default
/// answers. The registrar is shared so the owner can look bindings up.
#[derive(Debug, Clone)]
pub struct RegistrarApp {
    registrar: Arc<Mutex<Registrar>>,
    proxy: Arc<Mutex<Proxy>>,
    dispatcher: Dispatcher,
    /// Where the registrar's writes go when its bindings are shared with
    /// other processes ([`RegistrarApp::with_shared_store`]).
    store_ops: Option<mpsc::Sender<StoreOp>>,
}

impl RegistrarApp {
    /// Wraps a registrar.
    /// A registrar left with the all-zero default key gets a fresh key
    /// from the OS's secure generator here: a running server never signs
    /// its nonces and Record-Route tokens with a key anyone can know.
    pub fn new(mut registrar: Registrar) -> RegistrarApp {
        if registrar.config().key == [0; 32] {
            match crate::random::os_seed() {
                Ok(key) => registrar.set_key(key),
                Err(e) => tracing::warn!("registrar key: {e}"),
            }
        }
        RegistrarApp {
            registrar: Arc::new(Mutex::new(registrar)),
            proxy: Arc::new(Mutex::new(Proxy::new())),
            dispatcher: Dispatcher::new(),
            store_ops: None,
        }
    }

    /// Shares the registrar's bindings with other processes: its writes
    /// ([`StoreOp`]) go to `ops` (the [`crate::location::RedisStore`]'s
    /// writer), whose outcomes come back as [`StoreDone`] commands; a
    /// REGISTER's 2xx waits for its write.
    pub fn with_shared_store(mut self, ops: mpsc::Sender<StoreOp>) -> RegistrarApp {
        self.registrar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_shared(true);
        self.store_ops = Some(ops);
        self
    }

    /// The shared registrar (to look bindings up).
    pub fn registrar(&self) -> Arc<Mutex<Registrar>> {
        self.registrar.clone()
    }

    /// The shared proxy (to read its sizes).
    pub fn proxy(&self) -> Arc<Mutex<Proxy>> {
        self.proxy.clone()
    }
}

impl Application for RegistrarApp {
    fn on_event(&mut self, core: &mut Endpoint, now: Instant, event: Event) -> Option<Event> {
        let mut registrar = self
            .registrar
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut proxy = self.proxy.lock().unwrap_or_else(PoisonError::into_inner);
        let passed = self
            .dispatcher
            .handle_event(&mut registrar, &mut proxy, core, now, event);
        if let Some(ops) = &self.store_ops {
            queue_ops(&mut registrar, core, now, ops);
        }
        passed
    }

    /// Takes [`StoreDone`]: a shared-store write's outcome (the REGISTER
    /// waiting for it is answered).
    fn command(
        &mut self,
        core: &mut Endpoint,
        now: Instant,
        cmd: AppCommand,
    ) -> Result<Option<CallId>, CommandError> {
        let done = cmd
            .downcast::<StoreDone>()
            .map_err(|_| CommandError::Unsupported)?;
        let mut registrar = self
            .registrar
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        registrar.store_done(core, now, done.id, done.stored);
        if let Some(ops) = &self.store_ops {
            queue_ops(&mut registrar, core, now, ops);
        }
        Ok(None)
    }
}

/// Runs an [`EdgeProxy`] (RFC 5626 edge proxy) inside an endpoint task: the
/// core's events, keep-alives and its timer go to the sans-IO proxy; the
/// flows it closes are closed by the driver (the core's `poll_close`).
/// The proxy is shared so the owner can read its sizes.
#[derive(Debug, Clone)]
pub struct EdgeApp {
    edge: Arc<Mutex<EdgeProxy>>,
}

impl EdgeApp {
    /// Wraps an edge proxy.
    pub fn new(edge: EdgeProxy) -> EdgeApp {
        EdgeApp {
            edge: Arc::new(Mutex::new(edge)),
        }
    }

    /// The shared edge proxy.
    pub fn edge(&self) -> Arc<Mutex<EdgeProxy>> {
        self.edge.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EdgeProxy> {
        self.edge.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Application for EdgeApp {
    fn on_event(&mut self, core: &mut Endpoint, now: Instant, event: Event) -> Option<Event> {
        self.lock().handle_event(core, now, event)
    }

    fn on_keepalive(
        &mut self,
        now: Instant,
        transport: crate::core::Transport,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        flow: Option<crate::core::FlowId>,
    ) {
        self.lock()
            .handle_keepalive(now, transport, local, remote, flow);
    }

    fn configure(&mut self, core: &mut Endpoint) {
        self.lock().configure(core);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.lock().poll_timeout()
    }

    fn handle_timeout(&mut self, core: &mut Endpoint, now: Instant) {
        self.lock().handle_timeout(core, now);
    }
}

/// Why the flow-token key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowKeyError {
    /// It could not be read or created.
    #[error("flow key file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It does not hold exactly 32 bytes.
    #[error("flow key file {path}: {len} bytes, a key is exactly 32")]
    WrongLength {
        /// The file.
        path: std::path::PathBuf,
        /// Its length.
        len: usize,
    },
    /// No key could be drawn from the OS's secure generator.
    #[error("no random key: {0}")]
    Random(#[from] crate::random::RandomError),
}

/// The edge's flow-token key from `path`: read when the file exists (it
/// must hold exactly 32 bytes), else 32 bytes from the OS's secure
/// generator written there, readable by the owner only (0600), so tokens
/// handed out survive a restart.
pub fn load_or_create_flow_key(path: &std::path::Path) -> Result<[u8; 32], FlowKeyError> {
    use std::io::Write;
    let io = |source| FlowKeyError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| FlowKeyError::WrongLength {
                path: path.to_owned(),
                len: bytes.len(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let key = crate::random::os_seed()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(f) => f,
        // made meanwhile by another process: use that one
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return load_or_create_flow_key(path)
        }
        Err(e) => return Err(io(e)),
    };
    file.write_all(&key).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_flow_key_file_is_made_0600_then_read_back_and_a_bad_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("siproam-flowkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flow.key");
        let _ = std::fs::remove_file(&path);
        let key = load_or_create_flow_key(&path).unwrap();
        assert_ne!(key, [0; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load_or_create_flow_key(&path).unwrap(), key);
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            load_or_create_flow_key(&path),
            Err(FlowKeyError::WrongLength { len: 5, .. })
        ));
        let missing_dir = dir.join("nope").join("flow.key");
        assert!(matches!(
            load_or_create_flow_key(&missing_dir),
            Err(FlowKeyError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
