//! The registrar and the proxy as one element of a core endpoint: which of
//! them each event of the endpoint goes to. Sans-IO like the rest of the
//! crate; the driver's `siproam::edge::RegistrarApp` runs it inside an
//! endpoint task, the simulator's tests run it directly.

use std::time::{Duration, Instant};

use siproam_core::{Endpoint, Event};

use crate::{Handled, Proxy, Registrar, Routed};

/// Expired bindings are purged at most this often.
const PURGE_EVERY: Duration = Duration::from_secs(10);

/// Hands each event of the endpoint a [`Registrar`] and a [`Proxy`] run in
/// to the one it is for: a REGISTER to the registrar, other requests and
/// the answers to what the proxy forwarded to the proxy, a closed flow to
/// the registrar (its bindings end); requests for the element itself get
/// the default answers. Expired bindings are purged on the way, at most
/// every 10 s.
#[derive(Debug, Clone, Default)]
pub struct Dispatcher {
    last_purge: Option<Instant>,
}

impl Dispatcher {
    /// A dispatcher that purges at its first event.
    pub fn new() -> Dispatcher {
        Dispatcher::default()
    }

    /// One event of `core`. Returns it when the application should see it
    /// too: a REGISTER that changed a binding (challenges and refreshes
    /// are not news),
    /// responses and failures of requests the proxy did not send, a closed
    /// flow, and every other event.
    pub fn handle_event(
        &mut self,
        registrar: &mut Registrar,
        proxy: &mut Proxy,
        core: &mut Endpoint,
        now: Instant,
        event: Event,
    ) -> Option<Event> {
        if self
            .last_purge
            .is_none_or(|t| now.saturating_duration_since(t) > PURGE_EVERY)
        {
            registrar.purge(now);
            registrar.expire_store_waits(core, now);
            self.last_purge = Some(now);
        }
        match event {
            Event::IncomingRequest { tx, flow, request } => {
                if let Some(tx) = tx {
                    match registrar.handle_request(core, now, tx, flow, &request) {
                        // a binding changed: pass it on (challenges are not news)
                        Ok(Handled::Responded(200) | Handled::Pending) => {
                            return Some(Event::IncomingRequest {
                                tx: Some(tx),
                                flow,
                                request,
                            })
                        }
                        Ok(Handled::Responded(_) | Handled::Refreshed) | Err(_) => return None,
                        Ok(Handled::NotMine) => {}
                    }
                }
                match proxy.handle_request(core, now, tx, flow, request.clone(), registrar) {
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
                if proxy.handle_response(core, now, request, response.clone(), registrar) {
                    None
                } else {
                    Some(Event::Response { request, response })
                }
            }
            Event::RequestFailed { request, reason } => {
                if proxy.handle_failure(core, now, request, reason, registrar) {
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
