//! The registrar as an application of a running [`siproam`] endpoint.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use siproam::core::{Endpoint, Event};
use siproam::Application;

use crate::{Handled, Proxy, Registrar, Routed};

/// Runs a [`Registrar`] and a [`Proxy`] for the AoRs it holds inside an
/// endpoint task; requests for the element itself get the default
/// answers. The registrar is shared so the owner can look bindings up.
#[derive(Debug, Clone)]
pub struct RegistrarApp {
    registrar: Arc<Mutex<Registrar>>,
    proxy: Arc<Mutex<Proxy>>,
    last_purge: Option<Instant>,
}

impl RegistrarApp {
    /// Wraps a registrar.
    /// A registrar left with the all-zero default key gets a fresh key
    /// from the OS's secure generator here: a running server never signs
    /// its nonces and Record-Route tokens with a key anyone can know.
    pub fn new(mut registrar: Registrar) -> RegistrarApp {
        if registrar.config().key == [0; 32] {
            match siproam::random::os_seed() {
                Ok(key) => registrar.set_key(key),
                Err(e) => tracing::warn!("registrar key: {e}"),
            }
        }
        RegistrarApp {
            registrar: Arc::new(Mutex::new(registrar)),
            proxy: Arc::new(Mutex::new(Proxy::new())),
            last_purge: None,
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
        if self
            .last_purge
            .is_none_or(|t| now.saturating_duration_since(t) > Duration::from_secs(10))
        {
            registrar.purge(now);
            self.last_purge = Some(now);
        }
        let mut proxy = self.proxy.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::IncomingRequest { tx, flow, request } => {
                if let Some(tx) = tx {
                    match registrar.handle_request(core, now, tx, flow, &request) {
                        // a binding changed: pass it on (challenges are not news)
                        Ok(Handled::Responded(200)) => {
                            return Some(Event::IncomingRequest {
                                tx: Some(tx),
                                flow,
                                request,
                            })
                        }
                        Ok(Handled::Responded(_)) | Err(_) => return None,
                        Ok(Handled::NotMine) => {}
                    }
                }
                match proxy.handle_request(core, now, tx, flow, request.clone(), &mut registrar) {
                    Ok(Routed::ForUs) => {
                        if let Some(tx) = tx {
                            let _ = core.respond_default(now, tx, &request);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if let Some(tx) = tx {
                            let _ = core.respond_status(now, tx, 500, "Server Internal Error");
                        }
                    }
                }
                None
            }
            Event::Response { request, response } => {
                if proxy.handle_response(core, now, request, response.clone()) {
                    None
                } else {
                    Some(Event::Response { request, response })
                }
            }
            Event::RequestFailed { request, reason } => {
                if proxy.handle_failure(core, now, request, reason) {
                    None
                } else {
                    Some(Event::RequestFailed { request, reason })
                }
            }
            Event::FlowClosed { flow, reason } => {
                registrar.flow_failed(flow);
                Some(Event::FlowClosed { flow, reason })
            }
            other => Some(other),
        }
    }
}
