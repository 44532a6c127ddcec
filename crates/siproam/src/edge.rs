//! The registrar and proxy of `siproam-edge` as an [`Application`] of a
//! running endpoint: the sans-IO [`Dispatcher`] behind a lock, so the
//! owner can look bindings up from another task, and a key from the OS's
//! secure generator. The sans-IO types are re-exported here, so one
//! dependency on `siproam` is enough to run a registrar.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub use siproam_edge::*;

use crate::core::{Endpoint, Event};
use crate::Application;

/// Runs a [`Registrar`] and a [`Proxy`] for the AoRs it holds inside an
/// endpoint task; requests for the element itself get the default
/// answers. The registrar is shared so the owner can look bindings up.
#[derive(Debug, Clone)]
pub struct RegistrarApp {
    registrar: Arc<Mutex<Registrar>>,
    proxy: Arc<Mutex<Proxy>>,
    dispatcher: Dispatcher,
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
        }
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
        self.dispatcher
            .handle_event(&mut registrar, &mut proxy, core, now, event)
    }
}
