//! Test support shared by the registrar, proxy and flood simulations.

#![allow(dead_code, clippy::unwrap_used)]

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

use siproam_core::{Config, Event};
use siproam_edge::{Handled, Registrar, RegistrarConfig};
use siproam_sim::{NodeId, Sim};

/// The registrar's address in the simulations.
pub const REG: &str = "192.0.2.1";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A registrar endpoint at [`REG`] (no dialog layer) running `config`,
/// answering what is not a REGISTER the way a plain user agent would.
pub fn registrar_node(
    sim: &mut Sim,
    config: RegistrarConfig,
    core: Config,
) -> (NodeId, Rc<RefCell<Registrar>>) {
    let reg = sim.add_endpoint(
        "registrar",
        &[ip(REG)],
        Config {
            dialogs: false,
            ..core
        },
    );
    let registrar = Rc::new(RefCell::new(Registrar::new(config)));
    let r = registrar.clone();
    sim.set_handler(
        reg,
        Box::new(move |ep, now, ev| match ev {
            Event::IncomingRequest {
                tx: Some(tx),
                flow,
                request,
            } => {
                if r.borrow_mut()
                    .handle_request(ep, now, tx, flow, &request)
                    .unwrap()
                    == Handled::NotMine
                {
                    ep.respond_default(now, tx, &request).unwrap();
                }
                None
            }
            other => Some(other),
        }),
    );
    (reg, registrar)
}
