//! An RFC 5626 edge proxy in front of a registrar.
//!
//! ```sh
//! cargo run -p siproam --example edge -- 127.0.0.1:5070 127.0.0.1:5060 60
//! ```
//!
//! Arguments: where the edge listens (UDP and TCP), the registrar's
//! address (UDP), and how many seconds to run (Ctrl-C ends it sooner).
//! Clients register through the edge (`siproam agent --outbound
//! --outbound-proxy sip:127.0.0.1:5070`); the edge adds a `Path` with a
//! signed flow token, answers CRLF and STUN keep-alives, and sends 430
//! when a client's flow has died.

use std::net::SocketAddr;
use std::time::Duration;

use siproam::core::{Config, Target};
use siproam::edge::EdgeApp;
use siproam::transport::Transport;
use siproam::{EndpointConfig, EndpointEvent, EndpointHandle};
use siproam_edge::{EdgeConfig, EdgeProxy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:5070").parse()?;
    let registrar: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:5060").parse()?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);

    let registrar = Target {
        transport: Transport::Udp,
        remote: registrar,
        local: None,
        server_name: None,
    };
    // the key that signs flow tokens: from the OS's secure generator
    let edge = EdgeProxy::new(EdgeConfig::new(registrar, siproam::random::os_seed()?));
    let config = EndpointConfig {
        listen: vec![(Transport::Udp, listen), (Transport::Tcp, listen)],
        core: Config {
            seed: siproam::random::os_u64()?,
            // a proxy: every request goes to the application
            dialogs: false,
            ..Config::default()
        },
        ..Default::default()
    };
    let mut ep = EndpointHandle::start(config, Box::new(EdgeApp::new(edge))).await?;
    for l in ep.listeners().await? {
        println!("edge listening on {} {}", l.transport, l.local);
    }
    let stop = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::signal::ctrl_c() => break,
            ev = ep.next_event() => match ev {
                Some(EndpointEvent::Core(siproam::core::Event::FlowClosed { flow, reason })) => {
                    println!("flow {flow} closed: {reason}");
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    ep.shutdown().await;
    Ok(())
}
