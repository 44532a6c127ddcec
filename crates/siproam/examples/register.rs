//! Register and stay registered, with network-change detection on.
//!
//! ```sh
//! cargo run -p siproam --example register -- sip:alice@example.test sip:127.0.0.1:5060 30
//! ```
//!
//! Arguments: the address of record, the registrar URI, and how many
//! seconds to stay (Ctrl-C ends it sooner). The endpoint refreshes the
//! binding before it expires and, when the network monitor sees the
//! address change, re-registers from the new one on its own; every
//! registration and IP-change stage is printed. On the way out the
//! binding is removed.

use std::time::Duration;

use siproam::core::{Config, Event, RegistrationState};
use siproam::transport::Transport;
use siproam::{
    AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, Phone, PhoneConfig, WatchConfig,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let aor = args
        .next()
        .unwrap_or_else(|| "sip:alice@example.test".into());
    let registrar = args.next().unwrap_or_else(|| "sip:127.0.0.1:5060".into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);

    let config = EndpointConfig {
        // one UDP listener on any address, any port
        listen: vec![(Transport::Udp, "0.0.0.0:0".parse()?)],
        // the core draws no randomness of its own: it gets a seed
        core: Config {
            seed: siproam::random::os_u64()?,
            ..Config::default()
        },
        // detect network changes and follow them without being told
        watch: Some(WatchConfig::default()),
        ..Default::default()
    };
    let phone = Phone::new(PhoneConfig::default(), siproam::random::os_u64()?);
    let mut ep = EndpointHandle::start(config, Box::new(phone)).await?;
    let account = ep.register(AccountSpec::new(aor, registrar)).await?;

    let stop = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::signal::ctrl_c() => break,
            ev = ep.next_event() => match ev {
                Some(EndpointEvent::Core(Event::Registration(r))) => {
                    println!("registration {} (code {:?}, contact {:?})", r.state.as_str(), r.code, r.contact);
                    if r.state == RegistrationState::Failed {
                        eprintln!("the registrar refused us or did not answer");
                    }
                }
                Some(EndpointEvent::IpChange(c)) => {
                    println!("ip change: {} after {} ms", c.stage.as_str(), c.elapsed.as_millis());
                }
                Some(_) => {}
                None => break,
            },
        }
    }

    // remove the binding before leaving (bounded wait)
    ep.unregister(account).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = ep.next_event().await {
            if let EndpointEvent::Core(Event::Registration(r)) = ev {
                if r.state == RegistrationState::Unregistered {
                    println!("registration unregistered");
                    break;
                }
            }
        }
    })
    .await;
    ep.shutdown().await;
    Ok(())
}
