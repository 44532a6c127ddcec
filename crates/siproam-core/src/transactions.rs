//! The transaction table (RFC 3261 §17, RFC 6026): every client and
//! server transaction of an endpoint, their ids, and the indexes that
//! match a response (branch and method) or a retransmitted request (the
//! §17.2.3 key) to one. The table keeps an entry and its index together
//! and gives memory back as they go; the transitions, timers and sending
//! of the state machines are the endpoint's (`endpoint`).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use crate::admission::shrink;
use crate::endpoint::TxOwner;
use crate::flow::{FlowId, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientState {
    /// INVITE sent, nothing back (Timer A, B).
    Calling,
    /// Non-INVITE sent, nothing back (Timer E, F).
    Trying,
    /// A provisional response came.
    Proceeding,
    /// A failure (INVITE, Timer D) or any final (non-INVITE, Timer K).
    Completed,
    /// A 2xx to an INVITE (RFC 6026, Timer M).
    Accepted,
}

#[derive(Debug)]
pub(crate) struct ClientTx {
    pub(crate) invite: bool,
    pub(crate) state: ClientState,
    pub(crate) branch: String,
    pub(crate) method: String,
    pub(crate) request: Bytes,
    pub(crate) flow: FlowId,
    pub(crate) transport: Transport,
    pub(crate) owner: TxOwner,
    /// Current retransmission interval (Timer A / E).
    pub(crate) interval: Duration,
    /// How many times the request was sent (1, then one more per
    /// retransmission).
    pub(crate) sends: u32,
    /// The ACK for a failure response, kept to answer retransmissions.
    pub(crate) ack: Option<Bytes>,
    /// A request of an account: what answers a challenge to it
    /// (`crate::auth`).
    pub(crate) auth: Option<Box<crate::auth::AuthAttempt>>,
    /// A request moved from UDP to TCP for its size: how it goes over UDP
    /// if the connection cannot be made (`crate::large_request`).
    pub(crate) udp_fallback: Option<Box<crate::large_request::UdpFallback>>,
    /// When it was first sent (its outcome's elapsed time).
    pub(crate) started: std::time::Instant,
}

impl ClientTx {
    /// Still waiting for its final response.
    pub(crate) fn is_pending(&self) -> bool {
        matches!(
            self.state,
            ClientState::Calling | ClientState::Trying | ClientState::Proceeding
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerState {
    /// Non-INVITE received, not answered.
    Trying,
    /// A provisional response was sent (INVITE: from the start).
    Proceeding,
    /// A final response was sent (INVITE failure: Timer G/H; non-INVITE:
    /// Timer J).
    Completed,
    /// The ACK came (Timer I).
    Confirmed,
    /// A 2xx was sent to an INVITE (RFC 6026, Timer L).
    Accepted,
}

#[derive(Debug)]
pub(crate) struct ServerTx {
    pub(crate) invite: bool,
    pub(crate) state: ServerState,
    pub(crate) key: String,
    pub(crate) flow: FlowId,
    /// The request, to answer it without the application's copy.
    pub(crate) request: Bytes,
    pub(crate) last_response: Option<Bytes>,
    pub(crate) interval: Duration,
}

/// Every transaction of an endpoint.
#[derive(Debug, Default)]
pub(crate) struct Transactions {
    client: HashMap<u64, ClientTx>,
    /// (branch, method) → client transaction.
    client_index: HashMap<(String, String), u64>,
    server: HashMap<u64, ServerTx>,
    /// Matching key → server transaction.
    server_index: HashMap<String, u64>,
    /// The last id given (transactions and the application's
    /// [`crate::RequestId`]s share the numbering).
    next: u64,
    /// The client transaction started last (for callers that need its id).
    last_client: Option<u64>,
}

impl Transactions {
    /// A fresh id.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Keeps a new client transaction under `id` (from
    /// [`Transactions::next_id`]), indexed by its branch and method.
    pub(crate) fn insert_client(&mut self, id: u64, tx: ClientTx) {
        self.client_index
            .insert((tx.branch.clone(), tx.method.clone()), id);
        self.client.insert(id, tx);
    }

    /// Remembers `id` as the client transaction started last.
    pub(crate) fn set_last_client(&mut self, id: u64) {
        self.last_client = Some(id);
    }

    /// The client transaction started last.
    pub(crate) fn last_client(&self) -> Option<u64> {
        self.last_client
    }

    pub(crate) fn client(&self, id: u64) -> Option<&ClientTx> {
        self.client.get(&id)
    }

    pub(crate) fn client_mut(&mut self, id: u64) -> Option<&mut ClientTx> {
        self.client.get_mut(&id)
    }

    /// The client transaction a response with this top-Via branch and
    /// CSeq method answers.
    pub(crate) fn client_for(&self, branch: &str, method: &str) -> Option<u64> {
        self.client_index
            .get(&(branch.to_owned(), method.to_owned()))
            .copied()
    }

    /// Every client transaction, in no particular order.
    pub(crate) fn clients(&self) -> impl Iterator<Item = (u64, &ClientTx)> {
        self.client.iter().map(|(id, t)| (*id, t))
    }

    pub(crate) fn clients_mut(&mut self) -> impl Iterator<Item = (u64, &mut ClientTx)> {
        self.client.iter_mut().map(|(id, t)| (*id, t))
    }

    /// The ids of the client transactions for which `pred` holds.
    pub(crate) fn client_ids_where(&self, pred: impl Fn(&ClientTx) -> bool) -> Vec<u64> {
        self.clients()
            .filter(|(_, t)| pred(t))
            .map(|(id, _)| id)
            .collect()
    }

    /// Forgets a client transaction and its index entry.
    pub(crate) fn remove_client(&mut self, id: u64) -> Option<ClientTx> {
        let tx = self.client.remove(&id)?;
        self.client_index
            .remove(&(tx.branch.clone(), tx.method.clone()));
        shrink(&mut self.client);
        shrink(&mut self.client_index);
        Some(tx)
    }

    /// Keeps a new server transaction under `id` (from
    /// [`Transactions::next_id`]), indexed by its matching key.
    pub(crate) fn insert_server(&mut self, id: u64, tx: ServerTx) {
        self.server_index.insert(tx.key.clone(), id);
        self.server.insert(id, tx);
    }

    pub(crate) fn server(&self, id: u64) -> Option<&ServerTx> {
        self.server.get(&id)
    }

    pub(crate) fn server_mut(&mut self, id: u64) -> Option<&mut ServerTx> {
        self.server.get_mut(&id)
    }

    /// The server transaction a request with this matching key belongs to.
    pub(crate) fn server_for(&self, key: &str) -> Option<u64> {
        self.server_index.get(key).copied()
    }

    /// The ids of the server transactions on `flow`.
    pub(crate) fn server_ids_on(&self, flow: FlowId) -> Vec<u64> {
        self.server
            .iter()
            .filter(|(_, t)| t.flow == flow)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets a server transaction and its index entry.
    pub(crate) fn remove_server(&mut self, id: u64) -> Option<ServerTx> {
        let tx = self.server.remove(&id)?;
        self.server_index.remove(&tx.key);
        shrink(&mut self.server);
        shrink(&mut self.server_index);
        Some(tx)
    }

    /// How many transactions are held (client, server).
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.client.len(), self.server.len())
    }

    /// The flows the transactions use.
    pub(crate) fn flows_in_use(&self) -> impl Iterator<Item = FlowId> + '_ {
        self.client
            .values()
            .map(|t| t.flow)
            .chain(self.server.values().map(|t| t.flow))
    }

    /// Gives the maps' spare memory back.
    pub(crate) fn shrink(&mut self) {
        shrink(&mut self.client);
        shrink(&mut self.client_index);
        shrink(&mut self.server);
        shrink(&mut self.server_index);
    }
}
