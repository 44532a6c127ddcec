//! The transport stages of a change: `shutdown_transports`, then
//! `restart_listener` per listener (kept, taken back from an earlier
//! change, opened at the new address on its own port — retried, then any
//! port —, or restarted in place), and at the end the old listeners
//! closed or left to linger.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::endpoint::{Endpoint, ListenPoint};
use crate::flow::Transport;

use super::report::{IpChangeError, IpChangeStage, ListenFailure};
use super::run::{MobilityAction, MobilityResult, Run, Scope, Step, Waiting};
use super::view::ListenerView;

/// What to do with one listener.
pub(super) enum ListenerPlan {
    Keep,
    Reclaim(ListenerView),
    Listen(SocketAddr),
    Restart,
}

impl Endpoint {
    /// A listener is open (kept, taken back, opened or restarted): the
    /// stage is reported with its address, and it is one of the new ones.
    pub(super) fn listener_opened(
        &mut self,
        run: &mut Run,
        now: Instant,
        transport: Transport,
        listener: ListenerView,
        status: Result<(), IpChangeError>,
    ) {
        self.report(
            run,
            now,
            IpChangeStage::RestartListener,
            status,
            Scope {
                transport: Some(transport),
                address: Some(listener.local),
                ..Scope::default()
            },
        );
        run.new_points.push(listener);
    }

    pub(super) fn step_transports(&mut self, run: &mut Run) {
        run.step = Step::Listeners;
        run.old.clone_from(&run.view.listeners);
        run.queue = run.view.listeners.iter().copied().collect();
        run.fallback = self
            .accounts()
            .first()
            .and_then(|a| self.account_source(&run.view, *a));
        if !run.params.restart_listeners {
            run.new_points.clone_from(&run.old);
            run.queue.clear();
        }
        if !run.params.shutdown_transports {
            return;
        }
        if run.params.keep_unaffected {
            // only the stale ones: their address gone, or no longer the
            // one the OS would use towards their peer
            let view = &run.view;
            let stale: Vec<u64> = view
                .connections
                .iter()
                .filter(|c| {
                    !view.is_local(c.local.ip()) || view.source(c.remote) != Some(c.local.ip())
                })
                .map(|c| c.id)
                .collect();
            run.ask(MobilityAction::CloseConnections(stale), Waiting::Shutdown);
        } else {
            run.ask(MobilityAction::CloseAllStreams, Waiting::Shutdown);
        }
    }

    pub(super) fn plan_listener(&self, run: &Run, l: &ListenerView) -> ListenerPlan {
        match run.params.ip {
            // already there, or a wildcard of the new address's family
            // (it already receives on it)
            Some(ip)
                if l.local.ip() == ip
                    || (l.local.ip().is_unspecified() && l.local.is_ipv4() == ip.is_ipv4()) =>
            {
                ListenerPlan::Keep
            }
            // a partial change leaves a pinned listener whose address
            // still exists alone
            Some(_)
                if run.params.keep_unaffected
                    && !l.local.ip().is_unspecified()
                    && run.view.is_local(l.local.ip()) =>
            {
                ListenerPlan::Keep
            }
            // the new address, on the listener's own port (PJSIP's
            // restart keeps it; port forwards and firewall rules rely on
            // it): the one an earlier change left lingering there, or a
            // new one
            Some(ip) => {
                let addr = SocketAddr::new(ip, l.local.port());
                match run
                    .view
                    .lingering
                    .iter()
                    .find(|g| g.transport == l.transport && g.local == addr)
                {
                    Some(g) => ListenerPlan::Reclaim(*g),
                    None => ListenerPlan::Listen(addr),
                }
            }
            None => ListenerPlan::Restart,
        }
    }

    pub(super) fn step_listener(&mut self, now: Instant, run: &mut Run) {
        let Some(l) = run.queue.pop_front() else {
            self.listeners_done(run);
            return;
        };
        match self.plan_listener(run, &l) {
            ListenerPlan::Keep => {
                self.listener_opened(run, now, l.transport, l, Ok(()));
            }
            ListenerPlan::Listen(addr) => run.ask(
                MobilityAction::Listen {
                    transport: l.transport,
                    addr,
                    after: Duration::ZERO,
                },
                Waiting::Listen {
                    old: l,
                    addr,
                    attempt: 1,
                },
            ),
            ListenerPlan::Reclaim(lingering) => run.ask(
                MobilityAction::ReclaimListener(lingering.id),
                Waiting::Reclaim { old: l, lingering },
            ),
            ListenerPlan::Restart => run.ask(
                MobilityAction::RestartListener { listener: l.id },
                Waiting::Restart { old: l },
            ),
        }
    }

    pub(super) fn listeners_done(&mut self, run: &mut Run) {
        if run.params.restart_listeners {
            self.clear_listen_points();
            for l in &run.new_points {
                self.add_listen_point(ListenPoint {
                    transport: l.transport,
                    addr: l.local,
                });
            }
        }
        // the address Contacts and media use: the one given, else the one
        // the (first) listener is on now
        run.ip = run
            .params
            .ip
            .or_else(|| {
                run.new_points
                    .iter()
                    .map(|i| i.local.ip())
                    .find(|ip| !ip.is_unspecified())
            })
            .or(run.fallback)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let mut accounts = self.accounts();
        accounts.retain(|a| {
            run.params
                .accounts
                .as_ref()
                .is_none_or(|only| only.contains(a))
        });
        run.accounts = accounts.into();
        run.step = Step::Accounts;
    }

    pub(super) fn on_listen(
        &mut self,
        now: Instant,
        run: &mut Run,
        old: ListenerView,
        addr: SocketAddr,
        attempt: u8,
        result: MobilityResult,
    ) {
        let failure = match result {
            MobilityResult::Listening(l) => {
                // the third attempt is the fallback to another port
                let status = if attempt >= 3 {
                    run.failed += 1;
                    Err(IpChangeError::PortTaken {
                        ip: addr.ip(),
                        port: old.local.port(),
                        fallback: l.local,
                    })
                } else {
                    Ok(())
                };
                self.listener_opened(run, now, old.transport, l, status);
                return;
            }
            MobilityResult::ListenFailed(f) => f,
            _ => ListenFailure::Io(std::io::ErrorKind::Other),
        };
        let retry = match attempt {
            // once more after a moment (PJSIP's `restart_lis_delay`)
            1 => Some((addr, run.params.restart_listener_delay)),
            // the port is taken there: any port
            2 if failure == ListenFailure::AddrInUse && addr.port() != 0 => {
                Some((SocketAddr::new(addr.ip(), 0), Duration::ZERO))
            }
            _ => None,
        };
        match retry {
            Some((to, after)) => run.ask(
                MobilityAction::Listen {
                    transport: old.transport,
                    addr: to,
                    after,
                },
                Waiting::Listen {
                    old,
                    addr,
                    attempt: attempt + 1,
                },
            ),
            None => {
                run.failed += 1;
                let err = IpChangeError::Listen {
                    addr,
                    reason: failure,
                };
                self.report(
                    run,
                    now,
                    IpChangeStage::RestartListener,
                    Err(err),
                    Scope {
                        transport: Some(old.transport),
                        ..Scope::default()
                    },
                );
            }
        }
    }

    pub(super) fn step_retire(&mut self, run: &mut Run) {
        if !run.params.restart_listeners {
            run.step = Step::Confirm;
            return;
        }
        let Some(pos) = run
            .old
            .iter()
            .position(|l| !run.new_points.iter().any(|n| n.id == l.id))
        else {
            run.step = Step::Confirm;
            return;
        };
        let l = run.old.remove(pos);
        let action = if l.transport == Transport::Udp && !run.params.old_listener_grace.is_zero() {
            MobilityAction::RetireListener {
                listener: l.id,
                grace: run.params.old_listener_grace,
            }
        } else {
            MobilityAction::CloseListener(l.id)
        };
        run.ask(action, Waiting::Retire);
    }
}
