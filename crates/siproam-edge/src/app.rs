//! The registrar as an application of a running [`siproam`] endpoint.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use siproam::core::{Endpoint, Event};
use siproam::Application;

use crate::{Handled, Registrar};

/// Runs a [`Registrar`] inside an endpoint task; other requests get the
/// default answers. The registrar is shared so the owner can look
/// bindings up.
#[derive(Debug, Clone)]
pub struct RegistrarApp {
    registrar: Arc<Mutex<Registrar>>,
    last_purge: Option<Instant>,
}

impl RegistrarApp {
    /// Wraps a registrar.
    pub fn new(registrar: Registrar) -> RegistrarApp {
        RegistrarApp {
            registrar: Arc::new(Mutex::new(registrar)),
            last_purge: None,
        }
    }

    /// The shared registrar (to look bindings up).
    pub fn registrar(&self) -> Arc<Mutex<Registrar>> {
        self.registrar.clone()
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
        match event {
            Event::IncomingRequest {
                tx: Some(tx),
                flow,
                request,
            } => {
                match registrar.handle_request(core, now, tx, flow, &request) {
                    Ok(Handled::NotMine) => {
                        let _ = core.respond_default(now, tx, &request);
                        None
                    }
                    // a binding changed: pass it on (challenges are not news)
                    Ok(Handled::Responded(200)) => Some(Event::IncomingRequest {
                        tx: Some(tx),
                        flow,
                        request,
                    }),
                    Ok(Handled::Responded(_)) => None,
                    Err(_) => None,
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
