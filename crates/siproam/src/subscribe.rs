//! Subscriptions on a running endpoint: the commands an application
//! (the [`crate::Phone`]) takes to subscribe, unsubscribe and end what it
//! serves. Every protocol decision is the core's (`siproam_core::subscription`).

use std::time::Instant;

use siproam_core::{CallId, Endpoint as Core, SubId, SubscribeSpec, Target as CoreTarget};

use crate::endpoint::{AppCommand, CommandError};
use crate::{EndpointError, EndpointHandle};

/// Subscription commands (handled by the phone).
#[derive(Debug, Clone)]
pub enum SubscriptionCommand {
    /// Subscribe to `event` of `uri`, from the address of record `from`,
    /// through the next hop `target`.
    Subscribe {
        /// The resource.
        uri: String,
        /// Our address of record.
        from: String,
        /// The event package.
        event: String,
        /// The next hop.
        target: CoreTarget,
    },
    /// End a subscription we hold.
    Unsubscribe(SubId),
    /// End every subscription we serve: our presence `closed`, then a
    /// final NOTIFY each.
    EndServed,
    /// End every subscription, held (unsubscribed) and served (presence
    /// `closed`, then a final NOTIFY each): we go away.
    EndAll,
    /// Whether a SUBSCRIBE or NOTIFY of ours still waits for its answer
    /// (sent on the channel).
    Pending(std::sync::mpsc::Sender<bool>),
}

/// How long a subscription is asked for.
const EXPIRES: u32 = 600;

/// Performs a [`SubscriptionCommand`] on the core.
pub(crate) fn perform(
    core: &mut Core,
    now: Instant,
    cmd: SubscriptionCommand,
) -> Result<Option<CallId>, CommandError> {
    match cmd {
        SubscriptionCommand::Subscribe {
            uri,
            from,
            event,
            target,
        } => {
            let contact_user = siproam_sip::Uri::parse(&from)
                .ok()
                .and_then(|u| u.as_sip().and_then(|s| s.user()).map(str::to_owned))
                .unwrap_or_else(|| "siproam".into());
            core.subscribe(
                now,
                SubscribeSpec {
                    uri,
                    from,
                    event,
                    expires: EXPIRES,
                    target,
                    contact_user,
                },
            )
            .map_err(CommandError::Core)?;
        }
        SubscriptionCommand::Unsubscribe(sub) => {
            core.unsubscribe(now, sub).map_err(CommandError::Core)?
        }
        SubscriptionCommand::EndServed => {
            // we go away: presence closed first (a NOTIFY each), then
            // the final NOTIFYs
            core.set_presence(now, false);
            core.end_served_subscriptions(now)
        }
        SubscriptionCommand::EndAll => {
            core.set_presence(now, false);
            core.end_all_subscriptions(now)
        }
        SubscriptionCommand::Pending(reply) => {
            // (the asker waits for this command's answer, so it is there)
            let _ = reply.send(core.subscription_requests_pending());
        }
    }
    Ok(None)
}

/// Downcasts an application command to a [`SubscriptionCommand`].
pub(crate) fn downcast(cmd: AppCommand) -> Result<Box<SubscriptionCommand>, AppCommand> {
    cmd.downcast::<SubscriptionCommand>()
}

/// Subscription commands on an endpoint whose application is a
/// [`crate::Phone`].
impl EndpointHandle {
    /// Subscribes to `event` (`presence`, `message-summary`) of `uri`, from
    /// the address of record `from`, through the proxy `via` (a SIP URI)
    /// or straight to the URI's host. The subscription's id comes in its
    /// first event (`pending`).
    pub async fn subscribe(
        &self,
        uri: &str,
        from: &str,
        via: Option<&str>,
        event: &str,
    ) -> Result<(), EndpointError> {
        let hop = via.unwrap_or(uri);
        let (uri, from_aor, event) = (uri.to_owned(), from.to_owned(), event.to_owned());
        let make = move |target| -> AppCommand {
            Box::new(SubscriptionCommand::Subscribe {
                uri,
                from: from_aor,
                event,
                target,
            })
        };
        self.command_via(hop, from, make).await.map(|_| ())
    }

    /// Ends a subscription we hold.
    pub async fn unsubscribe(&self, sub: SubId) -> Result<(), EndpointError> {
        self.command(SubscriptionCommand::Unsubscribe(sub))
            .await
            .map(|_| ())
    }

    /// Ends every subscription, as the application goes away: each held
    /// one unsubscribed (`Expires: 0`); for each served one our presence
    /// `closed`, then a final NOTIFY. [`Self::subscription_requests_pending`]
    /// tells when their requests are answered.
    pub async fn end_all_subscriptions(&self) -> Result<(), EndpointError> {
        self.command(SubscriptionCommand::EndAll).await.map(|_| ())
    }

    /// Whether a SUBSCRIBE or NOTIFY of ours still waits for its final
    /// answer.
    pub async fn subscription_requests_pending(&self) -> Result<bool, EndpointError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.command(SubscriptionCommand::Pending(tx)).await?;
        Ok(rx.try_recv().unwrap_or(false))
    }

    /// Ends every subscription we serve: our presence `closed` (a NOTIFY
    /// each), then a final NOTIFY each.
    pub async fn end_served_subscriptions(&self) -> Result<(), EndpointError> {
        self.command(SubscriptionCommand::EndServed)
            .await
            .map(|_| ())
    }
}
