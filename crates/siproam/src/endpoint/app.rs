//! The application hook: what runs on the core's events inside the
//! endpoint task.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use siproam_core::{CallId, CoreError, Endpoint as Core, Event, FlowId, Transport};
use tokio::sync::mpsc;
use tracing::debug;

use super::EndpointEvent;

/// A command for the application ([`EndpointHandle::command`](super::EndpointHandle::command)): a value
/// of a type the application knows, which it downcasts; the endpoint
/// only carries it.
pub type AppCommand = Box<dyn Any + Send>;

/// Why the application did not carry out a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The application takes no command of that type (a plain user agent
    /// takes none).
    #[error("the application takes no such command")]
    Unsupported,
    /// The core refused it.
    #[error("core: {0}")]
    Core(#[from] CoreError),
    /// A socket the application needed (a call's RTP socket) could not be
    /// opened (out of descriptors …).
    #[error("no socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A call's media refused it (DTMF to a peer that takes no
    /// telephone-events, a character that is not a key …).
    #[error("media: {0}")]
    Media(#[from] siproam_media::MediaError),
    /// The call has no media (yet): not answered, or ended.
    #[error("the call has no media")]
    NoMedia,
    /// Too much waits already (MESSAGEs without an answer, DTMF keys).
    #[error("too much waiting already")]
    Busy,
    /// The call's media is not SRTP (a re-key asked of a plain call).
    #[error("the call's media is not SRTP")]
    NoSrtp,
}

/// What runs on the core's events inside the endpoint task: a user agent
/// that answers requests, a registrar, a proxy. It may act on the core at
/// once; returning the event passes it on to [`EndpointHandle::next_event`](super::EndpointHandle::next_event).
pub trait Application: Send + 'static {
    /// Handles one event.
    fn on_event(&mut self, core: &mut Core, now: Instant, event: Event) -> Option<Event>;

    /// Gets the channel the endpoint's events go to (for reports the
    /// application makes itself, such as media statistics).
    fn attach(&mut self, events: mpsc::Sender<EndpointEvent>) {
        let _ = events;
    }

    /// A command of the application's own type
    /// ([`EndpointHandle::command`](super::EndpointHandle::command), [`EndpointHandle::command_via`](super::EndpointHandle::command_via)),
    /// which it downcasts; it may name the call it made. By default every
    /// command is [`CommandError::Unsupported`].
    fn command(
        &mut self,
        core: &mut Core,
        now: Instant,
        cmd: AppCommand,
    ) -> Result<Option<CallId>, CommandError> {
        let _ = (core, now, cmd);
        Err(CommandError::Unsupported)
    }

    /// A keep-alive arrived on a flow: a ping on a connection (`flow`), or
    /// a STUN Binding request on UDP (`flow` is `None`; the flow is the
    /// address pair). The transport has answered it already.
    fn on_keepalive(
        &mut self,
        now: Instant,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        flow: Option<FlowId>,
    ) {
        let _ = (now, transport, local, remote, flow);
    }

    /// When the application's own timer is next due
    /// ([`Application::handle_timeout`]); `None`: no timer.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The application's timer is due: it may act on the core (close
    /// flows, send).
    fn handle_timeout(&mut self, core: &mut Core, now: Instant) {
        let _ = (core, now);
    }

    /// Sets up the core before the first event (the limits on incoming
    /// calls an application that takes calls wants).
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
