//! The application hook: what runs on the core's events inside the
//! endpoint task.

use std::time::Instant;

use siproam_core::{Endpoint as Core, Event};
use tokio::sync::mpsc;
use tracing::debug;

use super::EndpointEvent;

/// What runs on the core's events inside the endpoint task: a user agent
/// that answers requests, a registrar, a proxy. It may act on the core at
/// once; returning the event passes it on to [`EndpointHandle::events`].
pub trait Application: Send + 'static {
    /// Handles one event.
    fn on_event(&mut self, core: &mut Core, now: Instant, event: Event) -> Option<Event>;

    /// Gets the channel the endpoint's events go to (for reports the
    /// application makes itself, such as media statistics).
    fn attach(&mut self, events: mpsc::Sender<EndpointEvent>) {
        let _ = events;
    }

    /// A call command ([`EndpointHandle::call`] and friends); only a phone
    /// takes them.
    fn command(
        &mut self,
        core: &mut Core,
        now: Instant,
        cmd: crate::phone::PhoneCommand,
    ) -> Result<Option<siproam_core::CallId>, crate::phone::PhoneError> {
        let _ = (core, now, cmd);
        Err(siproam_core::CoreError::InvalidState.into())
    }

    /// Sets up the core before the first event (the limits on incoming
    /// calls a phone wants).
    fn configure(&mut self, core: &mut Core) {
        let _ = core;
    }
}

/// A plain user agent: answers requests it gets the default way (OPTIONS
/// 200, anything else 405/481), refuses calls with 486, and passes every
/// event on.
#[derive(Debug, Default)]
pub struct UserAgent;

impl Application for UserAgent {
    fn on_event(&mut self, core: &mut Core, now: Instant, event: Event) -> Option<Event> {
        match &event {
            Event::IncomingRequest {
                tx: Some(tx),
                request,
                ..
            } => {
                if let Err(e) = core.respond_default(now, *tx, request) {
                    debug!("no default answer: {e}");
                }
            }
            // no call handling in a plain UA: busy
            Event::IncomingCall { call, .. } => {
                if let Err(e) = core.answer(now, *call, 486, None) {
                    debug!("could not refuse a call: {e}");
                }
            }
            _ => {}
        }
        Some(event)
    }
}
