//! The account stages of a change: `shutdown_registration_flow` (its
//! flow let go and closed), the family switch, the flow opened for the
//! Contact when no listener of its transport exists, and the REGISTER
//! with the new Contact (`update_contact`, settled on its answer).

use std::net::SocketAddr;
use std::time::Instant;

use crate::endpoint::{Endpoint, Target};
use crate::flow::Transport;
use crate::registration::AccountId;

use super::params::AccountIpChange;
use super::report::{IpChangeError, IpChangeStage};
use super::run::{MobilityAction, Run, Scope, Step, Waiting};

/// One account being moved.
#[derive(Debug, Clone, Copy)]
pub(super) struct AccountMoveState {
    pub(super) account: AccountId,
    pub(super) knobs: AccountIpChange,
    pub(super) transport: Transport,
    pub(super) contact: SocketAddr,
    pub(super) keep_flow: bool,
}

impl Endpoint {
    pub(super) fn step_account(&mut self, now: Instant, run: &mut Run) {
        let Some(account) = run.accounts.pop_front() else {
            run.step = Step::Calls;
            return;
        };
        let defaults = AccountIpChange::from_params(&run.params);
        let knobs = self
            .account_routes(account)
            .and_then(|r| r.ip_change)
            .unwrap_or(defaults);
        let transport = self.account_transport(account).unwrap_or(Transport::Udp);
        let mut st = AccountMoveState {
            account,
            knobs,
            transport,
            contact: SocketAddr::new(run.ip, run.port_for(transport)),
            keep_flow: !knobs.shutdown_registration_flow,
        };
        // the new address is of the other family (IPv4 ↔ IPv6): the
        // account moves to the registrar's address in that family, over a
        // new flow
        if let Err(err) = self.switch_family(run, &mut st) {
            run.failed += 1;
            self.report(
                run,
                now,
                IpChangeStage::UpdateContact,
                Err(err),
                Scope {
                    account: Some(account),
                    transport: Some(transport),
                    address: Some(st.contact),
                    ..Scope::default()
                },
            );
            return;
        }
        if let Some(state) = self.mobility.accounts.get_mut(&account) {
            state.local_ip = Some(run.ip);
            state.contact = None;
        }
        // the registration's own flow is closed first (PJSIP's
        // `ip_change_cfg.shutdown_tp`, even if shared)
        let stream_flow = self.account_flow(account).filter(|f| {
            self.flows
                .get(*f)
                .is_some_and(|f| f.transport.is_reliable())
        });
        match stream_flow {
            Some(flow) if !st.keep_flow => {
                self.detach_account_flow(account);
                run.ask(MobilityAction::CloseFlow(flow), Waiting::AccountFlow(st));
            }
            _ => {
                self.connect_for_contact(run, &mut st);
                if run.action.is_none() {
                    self.move_account_now(now, run, st);
                }
            }
        }
    }

    pub(super) fn switch_family(
        &mut self,
        run: &Run,
        st: &mut AccountMoveState,
    ) -> Result<(), IpChangeError> {
        let ip = run.ip;
        let Some(current) = self.account_registrar(st.account) else {
            return Ok(());
        };
        let Some(routes) = self.account_routes(st.account) else {
            return Ok(());
        };
        if current.is_ipv4() == ip.is_ipv4() {
            return Ok(());
        }
        if !routes.sip.allows(ip) {
            return Err(IpChangeError::FamilyNotAllowed(routes.sip));
        }
        let c = routes
            .candidate(st.transport, ip)
            .ok_or(IpChangeError::NoRegistrarAddress { ipv6: ip.is_ipv6() })?;
        st.keep_flow = false;
        // the same registrar (one name) at its address in the new family
        let server_name = self.account_server_name(st.account);
        self.retarget_account(
            st.account,
            Target {
                transport: c.transport,
                remote: c.addr,
                local: Some(st.contact),
                server_name,
            },
        )?;
        Ok(())
    }

    /// No listener of the account's stream transport in the registrar's
    /// family: the new flow, opened now, is the Contact (RFC 5626: the
    /// flow), as at registration.
    pub(super) fn connect_for_contact(&mut self, run: &mut Run, st: &mut AccountMoveState) {
        if st.keep_flow {
            return;
        }
        let Some(remote) = self.account_registrar(st.account) else {
            return;
        };
        // (the listen points are the new listeners by now)
        if !self.needs_contact_flow(st.transport, remote) {
            return;
        }
        run.ask(
            MobilityAction::Connect {
                transport: st.transport,
                remote,
                local: SocketAddr::new(st.contact.ip(), 0),
                server_name: self.account_server_name(st.account),
            },
            Waiting::AccountConnect(*st),
        );
    }

    pub(super) fn move_account_now(&mut self, now: Instant, run: &mut Run, st: AccountMoveState) {
        match self.move_account_with(now, st.account, st.contact, st.keep_flow) {
            Ok(()) => {
                if st.knobs.shutdown_registration_flow {
                    self.report(
                        run,
                        now,
                        IpChangeStage::ShutdownRegistrationFlow,
                        Ok(()),
                        Scope {
                            account: Some(st.account),
                            transport: Some(st.transport),
                            ..Scope::default()
                        },
                    );
                }
                run.confirm_accounts
                    .insert(st.account, (st.transport, st.contact));
            }
            Err(e) => {
                run.failed += 1;
                self.report(
                    run,
                    now,
                    IpChangeStage::UpdateContact,
                    Err(e.into()),
                    Scope {
                        account: Some(st.account),
                        transport: Some(st.transport),
                        address: Some(st.contact),
                        ..Scope::default()
                    },
                );
            }
        }
    }
}
