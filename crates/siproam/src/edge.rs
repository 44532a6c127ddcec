//! The registrar and proxy of `siproam-edge` as an [`Application`] of a
//! running endpoint: the sans-IO [`Dispatcher`] behind a lock, so the
//! owner can look bindings up from another task, and a key from the OS's
//! secure generator. The sans-IO types are re-exported here, so one
//! dependency on `siproam` is enough to run a registrar.

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
