//! Call transfer on a running endpoint (the core's `dialog/transfer`):
//! the commands an application gives — a blind or attended transfer of a
//! call, following a transfer the peer asked of us (placing the new call
//! with its media), or giving it up — performed by the phone.

use std::time::Instant;

use siproam_core::{CallId, CoreError, Endpoint as Core, Target as CoreTarget, TransferId};

use crate::endpoint::{AppCommand, CommandError, EndpointError};
use crate::{EndpointHandle, Phone};

/// Transfer commands (handled by the phone).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TransferCommand {
    /// Blind transfer: REFER `call`'s peer to `target`.
    Blind {
        /// The call.
        call: CallId,
        /// Where to (a SIP URI).
        target: String,
    },
    /// Attended transfer: REFER `call`'s peer to `other`'s peer, replacing
    /// `other`.
    Attended {
        /// The call whose peer is transferred.
        call: CallId,
        /// The call to the transfer's target.
        other: CallId,
    },
    /// Place the new call of a transfer we accepted.
    Follow {
        /// The transfer.
        transfer: TransferId,
        /// Its target.
        uri: String,
        /// Our address of record.
        from: String,
        /// The next hop.
        target: CoreTarget,
    },
    /// Give up a transfer we accepted (the transferor hears `code`).
    Refuse(TransferId, u16),
}

/// Performs a [`TransferCommand`].
pub(crate) fn perform(
    phone: &mut Phone,
    core: &mut Core,
    now: Instant,
    cmd: TransferCommand,
) -> Result<Option<CallId>, CommandError> {
    match cmd {
        TransferCommand::Blind { call, target } => {
            core.transfer(now, call, &target)?;
            Ok(Some(call))
        }
        TransferCommand::Attended { call, other } => {
            core.transfer_attended(now, call, other)?;
            Ok(Some(call))
        }
        TransferCommand::Follow {
            transfer,
            uri,
            from,
            target,
        } => Ok(Some(phone.place_call(
            core,
            now,
            uri,
            from,
            target,
            Some(transfer),
        )?)),
        TransferCommand::Refuse(transfer, code) => {
            core.refuse_transfer(now, transfer, code)?;
            Ok(None)
        }
    }
}

/// Downcasts an application command to a [`TransferCommand`].
pub(crate) fn downcast(cmd: AppCommand) -> Result<Box<TransferCommand>, AppCommand> {
    cmd.downcast::<TransferCommand>()
}

/// Transfer commands on an endpoint whose application is a [`Phone`].
impl EndpointHandle {
    /// Transfers `call`'s peer to `target` (blind, RFC 3515). Its progress
    /// comes as `Event::Transfer`; on success the call is hung up.
    pub async fn transfer(&self, call: CallId, target: &str) -> Result<(), EndpointError> {
        self.command(TransferCommand::Blind {
            call,
            target: target.to_owned(),
        })
        .await
        .map(|_| ())
    }

    /// Transfers `call`'s peer to `other`'s peer (attended, RFC 3891
    /// `Replaces`).
    pub async fn transfer_attended(
        &self,
        call: CallId,
        other: CallId,
    ) -> Result<(), EndpointError> {
        self.command(TransferCommand::Attended { call, other })
            .await
            .map(|_| ())
    }

    /// Follows a transfer the peer asked of us: calls `uri` from `from`
    /// through the proxy `via` (or straight to the URI's host) as the
    /// transfer's new call. When that cannot start (the next hop does not
    /// resolve, no RTP socket), the transfer is given up (the transferor
    /// hears 503) and the error returned.
    pub async fn follow_transfer(
        &self,
        transfer: TransferId,
        uri: &str,
        from: &str,
        via: Option<&str>,
    ) -> Result<CallId, EndpointError> {
        let hop = via.unwrap_or(uri);
        let (u, from_aor) = (uri.to_owned(), from.to_owned());
        let make = move |target| -> AppCommand {
            Box::new(TransferCommand::Follow {
                transfer,
                uri: u,
                from: from_aor,
                target,
            })
        };
        match self.command_via(hop, from, make).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => {
                let _ = self.command(TransferCommand::Refuse(transfer, 503)).await;
                Err(EndpointError::Core(CoreError::InvalidState))
            }
            Err(e) => {
                let _ = self.command(TransferCommand::Refuse(transfer, 503)).await;
                Err(e)
            }
        }
    }
}
