//! Place a call and follow an IP change.
//!
//! ```sh
//! cargo run -p siproam --example call -- \
//!     sip:alice@example.test sip:127.0.0.1:5060 sip:bob@example.test 127.0.0.2 127.0.0.3
//! ```
//!
//! Arguments: our address of record, the registrar (also the proxy the
//! call goes through), the callee, the local address to start from and
//! the address to move to (both must exist on this machine: any
//! 127.0.0.0/8 address does on Linux). Registers, calls, lets a 440 Hz
//! tone flow for two seconds, moves to the new address — the binding is
//! re-registered and the call refreshed with the new Contact and SDP,
//! stage by stage — lets the tone flow two more seconds, hangs up.

use std::net::IpAddr;
use std::time::Duration;

use siproam::core::{CallEvent, CallState, Config, Event, RegistrationState};
use siproam::transport::Transport;
use siproam::{
    AccountSpec, AudioSpec, EndpointConfig, EndpointEvent, EndpointHandle, Phone, PhoneCommand,
    PhoneConfig,
};

/// Prints what happens, until `until` or the end of the call.
async fn follow(ep: &mut EndpointHandle, until: Duration) -> Result<(), String> {
    let stop = tokio::time::sleep(until);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            ev = ep.next_event() => match ev {
                Some(EndpointEvent::Core(Event::Call(CallEvent::State { call, state, code, .. }))) => {
                    println!("call {} {} (code {code:?})", call.0, state.as_str());
                    if state == CallState::Disconnected {
                        return Err(format!("the call ended (code {code:?})"));
                    }
                }
                Some(EndpointEvent::IpChange(c)) => {
                    println!("ip change: {} {} after {} ms", c.stage.as_str(),
                        if c.status.is_ok() { "ok" } else { "failed" }, c.elapsed.as_millis());
                }
                Some(EndpointEvent::Core(Event::Registration(r))) => {
                    println!("registration {} (code {:?})", r.state.as_str(), r.code);
                }
                Some(EndpointEvent::Media(m)) => {
                    println!("media sent {} received {} packets, longest gap {:.0} ms",
                        m.tx_packets, m.rx_packets, m.max_gap_ms);
                }
                Some(_) => {}
                None => return Err("the endpoint stopped".into()),
            },
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [aor, registrar, callee, from_ip, to_ip] = args.as_slice() else {
        return Err("usage: call AOR REGISTRAR CALLEE LOCAL_IP NEW_IP".into());
    };
    let from_ip: IpAddr = from_ip.parse()?;
    let to_ip: IpAddr = to_ip.parse()?;

    let config = EndpointConfig {
        listen: vec![(Transport::Udp, (from_ip, 0).into())],
        core: Config {
            seed: siproam::random::os_u64()?,
            ..Config::default()
        },
        ..Default::default()
    };
    let phone = Phone::new(
        PhoneConfig {
            play: AudioSpec::Tone(440.0),
            media_ip: Some(from_ip),
            ..PhoneConfig::default()
        },
        siproam::random::os_u64()?,
    );
    let mut ep = EndpointHandle::start(config, Box::new(phone)).await?;
    ep.register(AccountSpec::new(aor.as_str(), registrar.as_str()))
        .await?;
    // wait for the binding (bounded)
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = ep.next_event().await {
            if let EndpointEvent::Core(Event::Registration(r)) = ev {
                println!("registration {} (code {:?})", r.state.as_str(), r.code);
                match r.state {
                    RegistrationState::Registered => return Ok(()),
                    RegistrationState::Failed => return Err("registration failed"),
                    _ => {}
                }
            }
        }
        Err("the endpoint stopped")
    })
    .await
    .map_err(|_| "no answer from the registrar")??;

    let call = ep.call(callee, aor, Some(registrar)).await?;
    follow(&mut ep, Duration::from_secs(2)).await?;
    // the network change: told here; with `EndpointConfig::watch` the
    // endpoint notices it by itself
    println!("moving from {from_ip} to {to_ip}");
    ep.ip_change(to_ip).await?;
    follow(&mut ep, Duration::from_secs(2)).await?;
    ep.phone(PhoneCommand::HangUp(call)).await?;
    let _ = follow(&mut ep, Duration::from_secs(1)).await;
    ep.shutdown().await;
    Ok(())
}
